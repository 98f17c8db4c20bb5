/*
 * The POSIX port: the link is the process's stdin/stdout as binary pipes, the
 * timer is CLOCK_MONOTONIC in nanoseconds, reset re-executes the program and
 * abort exits with the code. Nothing else may write to stdout. A watch thread
 * ends the process once nobody reads its stdout (the host is gone), even in
 * the middle of a long kernel.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "utvm/port.h"
#include "utvm_posix.h"

#ifndef UTVM_POSIX_OUT_BUFFER
#define UTVM_POSIX_OUT_BUFFER (256u * 1024u)
#endif

#ifndef UTVM_BOARD_NAME
#define UTVM_BOARD_NAME "host"
#endif

static char **saved_argv;

void utvm_posix_set_argv(char **argv) { saved_argv = argv; }

/* poll() with no events still reports POLLERR on a pipe's write end once its last reader has
 * closed, and POLLHUP on a socket or terminal that hung up: the host that would read the replies
 * is gone (it exited, was killed, or closed the link), so there is nothing left to serve. */
static void *watch_host(void *unused) {
  struct pollfd out;
  (void)unused;
  out.fd = STDOUT_FILENO;
  out.events = 0;
  for (;;) {
    out.revents = 0;
    if (poll(&out, 1, -1) > 0 && (out.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) {
      _exit(UTVM_POSIX_EXIT_HOST_GONE);
    }
  }
  return NULL;
}

void utvm_posix_watch_host(void) {
  pthread_t thread;
  if (pthread_create(&thread, NULL, watch_host, NULL) == 0) {
    (void)pthread_detach(thread);
  }
}

static int32_t write_all(const uint8_t *data, uint32_t n) {
  while (n > 0u) {
    ssize_t w = write(STDOUT_FILENO, data, n);
    if (w < 0) {
      if (errno == EINTR) {
        continue;
      }
      return -1;
    }
    data += w;
    n -= (uint32_t)w;
  }
  return 0;
}

/* Output waits here until the device is about to read (or the buffer fills): the replies to a
 * whole batch of pipelined requests then leave in one write, and the host is woken once per
 * batch instead of once per reply. Every reply is out before the device waits for input. */
static uint8_t out_buf[UTVM_POSIX_OUT_BUFFER];
static uint32_t out_len;

static int32_t flush_out(void) {
  int32_t err = write_all(out_buf, out_len);
  out_len = 0;
  return err;
}

int32_t utvm_port_write(const uint8_t *data, uint32_t n) {
  if (n > sizeof(out_buf) - out_len) {
    if (flush_out() < 0) {
      return -1;
    }
    if (n > sizeof(out_buf)) {
      return write_all(data, n);
    }
  }
  memcpy(out_buf + out_len, data, n);
  out_len += n;
  return 0;
}

int32_t utvm_port_read(uint8_t *buf, uint32_t n) {
  if (out_len > 0u && flush_out() < 0) {
    return -1;
  }
  for (;;) {
    ssize_t r = read(STDIN_FILENO, buf, n);
    if (r > 0) {
      return (int32_t)r;
    }
    if (r < 0 && errno == EINTR) {
      continue;
    }
    return -1; /* end of file or a broken link */
  }
}

uint64_t utvm_port_timer_ticks(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t utvm_port_timer_hz(void) { return 1000000000u; }

void utvm_port_reset(void) {
  /* Same pipes, fresh process: stdin/stdout survive exec, so the host sees a
   * new boot announcement on the same link. */
  (void)flush_out(); /* the reply to RESET goes out before the new boot's ANNOUNCE */
  if (saved_argv != NULL) {
    execv("/proc/self/exe", saved_argv);
    execvp(saved_argv[0], saved_argv);
  }
  utvm_port_abort(UTVM_POSIX_EXIT_RESET_FAILED);
}

void utvm_port_abort(int32_t code) {
  /* Exit codes are 8 bits; never let an abort look like a clean exit (0). */
  int status = (int)(code & 0xFF);
  (void)flush_out();
  _exit(status != 0 ? status : 1);
}

const char *utvm_port_board_name(void) { return UTVM_BOARD_NAME; }
