/*
 * The raw-pipe peer: the least a device process can do over stdin/stdout.
 * Commands (one byte, then a 4-byte little-endian length where noted):
 *   'e'        echo: reply one byte
 *   'u' len    upload: read len bytes and discard them, then reply 'k'
 *   'd' len    download: write len bytes
 * It is the ceiling a host-driven protocol over the same pipe can approach.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static uint8_t buf[1 << 16];

/* Move exactly n bytes through stdin (reading) or stdout (writing); -1 at end of file. */
static int move_full(uint8_t *p, size_t n, int writing) {
  while (n > 0) {
    ssize_t done = writing ? write(1, p, n) : read(0, p, n);
    if (done <= 0) return -1;
    p += done;
    n -= (size_t)done;
  }
  return 0;
}

int main(void) {
  uint8_t cmd;
  uint8_t len_le[4];
  uint8_t ack = 'k';
  memset(buf, 0x5a, sizeof(buf));
  while (move_full(&cmd, 1, 0) == 0) {
    uint32_t len = 0;
    if (cmd == 'e') {
      if (move_full(&cmd, 1, 1) != 0) return 1;
      continue;
    }
    if (move_full(len_le, 4, 0) != 0) return 1;
    len = (uint32_t)len_le[0] | (uint32_t)len_le[1] << 8 | (uint32_t)len_le[2] << 16 | (uint32_t)len_le[3] << 24;
    while (len > 0) {
      size_t chunk = len < sizeof(buf) ? len : sizeof(buf);
      if (move_full(buf, chunk, cmd != 'u') != 0) return 1;
      len -= (uint32_t)chunk;
    }
    if (cmd == 'u' && move_full(&ack, 1, 1) != 0) return 1;
  }
  return 0;
}
