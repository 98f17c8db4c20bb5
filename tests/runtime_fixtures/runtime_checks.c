/*
 * C-level checks of the backend (workspace allocator, error text) and the
 * framer (round trip, resync, bad escapes, oversized frames), linked with
 * stub_port.c, which captures output in memory. Prints one line per failed check and
 * exits non-zero if any failed. Built and run by tests/test_runtime_build.py.
 */
#include <stdio.h>
#include <string.h>

#include "utvm/backend.h"
#include "utvm/config.h"
#include "utvm/framing.h"
#include "stub_port.h"

void *TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code_hint,
                               int dtype_bits_hint);
int TVMBackendFreeWorkspace(int device_type, int device_id, void *ptr);
void TVMFFIErrorSetRaisedFromCStr(const char *kind, const char *message);
void TVMFFIErrorSetRaisedFromCStrParts(const char *kind, const char **message_parts, int32_t num_parts);

static int failures;
#define CHECK(cond)                                               \
  do {                                                            \
    if (!(cond)) {                                                \
      printf("FAILED line %d: %s\n", __LINE__, #cond);            \
      failures++;                                                 \
    }                                                             \
  } while (0)

static void check_workspace(void) {
  static uint8_t ws[256] __attribute__((aligned(16)));
  uint8_t *a;
  uint8_t *b;
  uint8_t *c;
  utvm_backend_init(ws + 1, 200); /* a misaligned base: allocations must still be aligned */
  a = TVMBackendAllocWorkspace(1, 0, 10, 0, 8);
  b = TVMBackendAllocWorkspace(1, 0, 40, 0, 8);
  CHECK(a != NULL && b != NULL);
  CHECK(((uintptr_t)a & 15u) == 0 && ((uintptr_t)b & 15u) == 0);
  CHECK(b >= a + 10);
  CHECK(TVMBackendAllocWorkspace(1, 0, 1000, 0, 8) == NULL);
  CHECK(strstr(utvm_backend_last_error(), "out of workspace: 1000 bytes requested") != NULL);
  /* Out-of-order free: a's space returns only once b is freed too. */
  CHECK(TVMBackendFreeWorkspace(1, 0, a) == 0);
  c = TVMBackendAllocWorkspace(1, 0, 8, 0, 8);
  CHECK(c != NULL && c > b);
  CHECK(TVMBackendFreeWorkspace(1, 0, c) == 0);
  CHECK(TVMBackendFreeWorkspace(1, 0, b) == 0);
  c = TVMBackendAllocWorkspace(1, 0, 8, 0, 8);
  CHECK(c == a);
  CHECK(TVMBackendFreeWorkspace(1, 0, c) == 0);
  CHECK(TVMBackendFreeWorkspace(1, 0, ws) != 0); /* not a live allocation */
  CHECK(utvm_backend_workspace_peak() >= 50u);
  utvm_backend_reset();
  CHECK(utvm_backend_last_error()[0] == '\0');
  utvm_backend_init(NULL, 0);
  CHECK(TVMBackendAllocWorkspace(1, 0, 1, 0, 8) == NULL);
}

static void check_errors(void) {
  const char *parts[3] = {"a", "b", "c"};
  char longer[400];
  utvm_backend_reset();
  TVMFFIErrorSetRaisedFromCStrParts("TypeError", parts, 3);
  CHECK(strcmp(utvm_backend_last_error(), "TypeError: abc") == 0);
  memset(longer, 'x', sizeof(longer) - 1);
  longer[sizeof(longer) - 1] = '\0';
  TVMFFIErrorSetRaisedFromCStr("ValueError", longer);
  CHECK(strlen(utvm_backend_last_error()) == UTVM_BACKEND_ERROR_BYTES - 1);
  CHECK(strncmp(utvm_backend_last_error(), "ValueError: xxx", 15) == 0);
}

static uint8_t got[8][300];
static uint32_t got_len[8];
static uint32_t got_count;
static void on_packet(const uint8_t *p, uint32_t len, void *ctx) {
  (void)ctx;
  if (got_count < 8) {
    memcpy(got[got_count], p, len);
    got_len[got_count++] = len;
  }
}

static void check_framer(void) {
  static uint8_t rx[258];
  utvm_framer_t f;
  uint8_t payload[256];
  uint8_t garbage[5] = {0x7D, 0x41, 0x00, 0x7E, 0x13};
  uint32_t i;
  const uint8_t check[9] = {'1', '2', '3', '4', '5', '6', '7', '8', '9'};
  CHECK(utvm_crc16(0xFFFFu, check, 9) == 0x29B1u);
  for (i = 0; i < sizeof(payload); i++) {
    payload[i] = (uint8_t)i; /* every byte value, FLAG and ESC included */
  }
  stub_port_wire_len = 0;
  CHECK(utvm_frame_send(payload, 100, payload + 100, 156) == 0);
  utvm_framer_init(&f, rx, sizeof(rx));
  got_count = 0;
  /* Byte by byte, after garbage holding a bad escape and a stray FLAG. */
  for (i = 0; i < sizeof(garbage); i++) {
    utvm_framer_feed(&f, garbage + i, 1, on_packet, NULL);
  }
  for (i = 0; i < stub_port_wire_len; i++) {
    utvm_framer_feed(&f, stub_port_wire + i, 1, on_packet, NULL);
  }
  CHECK(got_count == 1 && got_len[0] == 256 && memcmp(got[0], payload, 256) == 0);
  CHECK(f.bad_frames == 2);
  /* A flipped bit is caught; the next frame still decodes. */
  stub_port_wire[5] ^= 0x01;
  utvm_framer_feed(&f, stub_port_wire, stub_port_wire_len, on_packet, NULL);
  CHECK(got_count == 1 && f.bad_frames == 3);
  stub_port_wire[5] ^= 0x01;
  utvm_framer_feed(&f, stub_port_wire, stub_port_wire_len, on_packet, NULL);
  CHECK(got_count == 2 && memcmp(got[1], payload, 256) == 0);
  /* A frame over the buffer is dropped whole. */
  utvm_framer_init(&f, rx, 100);
  utvm_framer_feed(&f, stub_port_wire, stub_port_wire_len, on_packet, NULL);
  CHECK(got_count == 2 && f.bad_frames == 1);
  stub_port_wire_len = 0;
  CHECK(utvm_frame_send(payload, 10, NULL, 0) == 0);
  utvm_framer_feed(&f, stub_port_wire, stub_port_wire_len, on_packet, NULL);
  CHECK(got_count == 3 && got_len[2] == 10);
}

int main(void) {
  check_workspace();
  check_errors();
  check_framer();
  printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
