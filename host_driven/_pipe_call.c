/*
 * The host's single-request fast path over a pipe pair (host_driven/pipe_call.py): frame one
 * request, write it, wait for the reply and check it, in one C call. A round trip over a pipe
 * takes a few microseconds, and the Python steps it replaces (framing, two system calls, the
 * decoder) took about a third of that. Anything but the one expected reply is handed back as raw
 * bytes for the Python session to sort out (logs, errors, stale or corrupted frames, retries), so
 * this file knows nothing of the protocol's recovery rules. Built into the framing accelerator.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "utvm/protocol.h"

#define FLAG UTVM_FRAME_FLAG

/* From _framing_accel.c, in the same library. */
size_t utvm_accel_encode(const uint8_t *head, size_t head_n, const uint8_t *body, size_t body_n, uint8_t *out);
long utvm_accel_decode(const uint8_t *p, size_t n, uint8_t *out, size_t cap);

/* Outcomes other than a reply's payload length (>= 0). pipe_call.py names them again. */
enum {
  CALL_OTHER = -1,         /* rx[0..got) is not exactly the expected reply: the session decodes it */
  CALL_TIMEOUT = -2,       /* nothing arrived within the timeout */
  CALL_READ_FAILED = -3,   /* end of file or a read error */
  CALL_WRITE_FAILED = -4,  /* the write failed (the device is gone) */
  CALL_WRITE_PARTIAL = -5, /* the pipe took only `written` bytes of frame[0..frame_n) */
  CALL_TOO_LARGE = -6,     /* the frame might not fit frame_cap: nothing was sent */
  CALL_INTERRUPTED = -7,   /* a signal arrived while waiting: Python runs its handler, then waits on */
};

/* Kept by pipe_call.py for a transport's life; the caller owns every buffer. */
typedef struct {
  int write_fd;
  int read_fd;
  uint8_t *frame; /* room for the largest request's frame */
  size_t frame_cap;
  size_t frame_n;
  size_t written;
  uint8_t *rx; /* the bytes read */
  size_t rx_cap;
  size_t got;
  uint8_t *reply; /* the reply packet, unescaped, CRC checked and stripped */
  size_t reply_cap;
  size_t replies; /* calls answered by their reply, for the session's link figures */
} utvm_pipe_call_t;

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long)ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Waits up to timeout_ms for the read end: 1 when readable (or hung up), 0 at the deadline, -1
 * when a signal interrupted the wait. A signal must reach Python at once: its handler (SIGINT's
 * KeyboardInterrupt, say) only runs once this call has returned. */
static int wait_readable(int fd, long timeout_ms) {
  struct pollfd pfd;
  int ready;
  pfd.fd = fd;
  pfd.events = POLLIN;
  pfd.revents = 0;
  ready = poll(&pfd, 1, timeout_ms > 0 ? (int)(timeout_ms < INT_MAX ? timeout_ms : INT_MAX) : 0);
  if (ready > 0) {
    return 1;
  }
  if (ready < 0 && errno == EINTR) {
    return -1;
  }
  return ready < 0; /* a poll error: let the read report it */
}

/* Sends the request packet[0..n) (n >= the 8-byte header) framed and returns the reply's payload
 * length, with its packet in reply, when the first bytes to arrive are exactly one good frame
 * holding that request's REPLY_OK (the same header but the kind byte); else one of the CALL_*
 * outcomes, with whatever arrived in rx[0..got). */
long utvm_pipe_call(utvm_pipe_call_t *c, const uint8_t *packet, size_t n, long timeout_ms) {
  long deadline = -1; /* set when a read first finds nothing: most replies need no wait */
  ssize_t w;
  ssize_t r;
  long len;
  c->frame_n = 0;
  c->written = 0;
  c->got = 0;
  if (c->frame_cap < 6u || n > (c->frame_cap - 6u) / 2u) { /* 2 (n + 2) + 2: every byte escaped, CRC too */
    return CALL_TOO_LARGE;
  }
  c->frame_n = utvm_accel_encode(packet, n, NULL, 0, c->frame);
  do {
    w = write(c->write_fd, c->frame, c->frame_n);
  } while (w < 0 && errno == EINTR);
  if (w < 0) {
    return errno == EAGAIN || errno == EWOULDBLOCK ? CALL_WRITE_PARTIAL : CALL_WRITE_FAILED;
  }
  c->written = (size_t)w;
  if (c->written != c->frame_n) {
    return CALL_WRITE_PARTIAL;
  }
  for (;;) {
    r = read(c->read_fd, c->rx, c->rx_cap);
    if (r > 0) {
      break;
    }
    if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      return CALL_READ_FAILED;
    }
    if (errno == EINTR) {
      return CALL_INTERRUPTED;
    }
    if (deadline < 0) {
      deadline = now_ms() + timeout_ms;
    }
    switch (wait_readable(c->read_fd, deadline - now_ms())) {
      case 0:
        return CALL_TIMEOUT;
      case -1:
        return CALL_INTERRUPTED;
      default:
        break; /* readable: read again */
    }
  }
  c->got = (size_t)r;
  /* One whole frame, FLAG to FLAG, and nothing else. */
  if (c->got < 2 || c->rx[0] != FLAG || c->rx[c->got - 1] != FLAG ||
      memchr(c->rx + 1, FLAG, c->got - 2) != NULL) {
    return CALL_OTHER;
  }
  len = utvm_accel_decode(c->rx + 1, c->got - 2, c->reply, c->reply_cap);
  if (len < (long)UTVM_MSG_HEADER_BYTES || n < UTVM_MSG_HEADER_BYTES || c->reply[0] != UTVM_PKT_REPLY_OK ||
      memcmp(c->reply + 1, packet + 1, UTVM_MSG_HEADER_BYTES - 1u) != 0) {
    return CALL_OTHER;
  }
  c->replies++;
  return len - (long)UTVM_MSG_HEADER_BYTES;
}
