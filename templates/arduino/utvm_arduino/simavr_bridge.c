/*
 * utvm-simavr-bridge: run an AVR firmware under libsimavr (cycle-exact) with its UART0 on a
 * pseudo-terminal, so a host opens the simulated board's serial port as it would a real one.
 *
 *   utvm-simavr-bridge --mcu atmega2560 --freq 16000000 [--start-on-stdin] FIRMWARE.elf
 *
 * It prints "pty <path of the terminal>" on stdout once the terminal exists, and starts the firmware
 * once a host has the terminal open, or with --start-on-stdin once a byte arrives on stdin (a host
 * that has opened the terminal and flushed it says so: nothing the firmware sends is lost then).
 * Bytes the firmware sends go to the terminal (and are dropped while no host has it open, as on a
 * wire); bytes written to the terminal enter the UART as fast as its receive FIFO takes them.
 * When the firmware stops (interrupts off and asleep: status 0) or crashes (status 3), the bridge
 * exits once the host has closed the terminal (at most LINGER_MSEC later): closing a terminal's
 * master discards what its reader has not read yet. It also exits when its parent dies (Linux).
 * On exit it prints "cycles <n>" on stderr: the simulated clock's cycles since reset.
 *
 * Built on the machine from Debian's libsimavr-dev:
 *   cc -O2 -I/usr/include/simavr simavr_bridge.c -o utvm-simavr-bridge -lsimavr
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <avr_uart.h>
#include <sim_avr.h>
#include <sim_elf.h>
#include <sim_irq.h>

/* Bytes between the terminal and the UART, each way. */
#define QUEUE_BYTES 65536u
/* Simulated cycles between looks at the terminal while the firmware runs. */
#define POLL_CYCLES 2048u
/* Longest real time one idle sleep waits on the terminal (microseconds). */
#define MAX_IDLE_USEC 20000u
/* How long the firmware may be held up by a terminal nobody reads before output is dropped. */
#define STALL_LIMIT_MSEC 2000
/* How long a stopped firmware's last bytes wait for the host to read them and close the terminal. */
#define LINGER_MSEC 5000

typedef struct queue {
  uint8_t data[QUEUE_BYTES];
  uint32_t head; /* next byte out */
  uint32_t len;
} queue_t;

static avr_t *avr;
static avr_irq_t *uart_input;
static int master = -1;
static queue_t to_host;  /* firmware -> terminal */
static queue_t to_board; /* terminal -> firmware */
static int uart_ready;   /* the UART's receive FIFO takes bytes (XON seen, no XOFF since) */
static int host_present;

static void die(const char *what) {
  fprintf(stderr, "utvm-simavr-bridge: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void push(queue_t *q, uint8_t b) {
  if (q->len < QUEUE_BYTES) {
    q->data[(q->head + q->len) % QUEUE_BYTES] = b;
    q->len++;
  }
}

static void feed_uart(void) {
  while (uart_ready && to_board.len > 0u) {
    uint8_t b = to_board.data[to_board.head];
    to_board.head = (to_board.head + 1u) % QUEUE_BYTES;
    to_board.len--;
    /* May call back with XOFF, which stops this loop. */
    avr_raise_irq(uart_input, b);
  }
}

static void on_uart_output(struct avr_irq_t *irq, uint32_t value, void *param) {
  (void)irq;
  (void)param;
  if (host_present) {
    push(&to_host, (uint8_t)value);
  }
}

static void on_xon(struct avr_irq_t *irq, uint32_t value, void *param) {
  (void)irq;
  (void)value;
  (void)param;
  uart_ready = 1;
  feed_uart();
}

static void on_xoff(struct avr_irq_t *irq, uint32_t value, void *param) {
  (void)irq;
  (void)value;
  (void)param;
  uart_ready = 0;
}

/* Is a host holding the terminal open? The master reports a hang-up while no one does. */
static int terminal_open(void) {
  struct pollfd p = {master, POLLIN, 0};
  if (poll(&p, 1, 0) < 0) {
    return 0;
  }
  return (p.revents & POLLHUP) == 0;
}

/* Move bytes between the terminal and the queues, waiting up to timeout_usec for something to do. */
static void service_terminal(uint32_t timeout_usec) {
  struct pollfd p = {master, POLLIN, 0};
  struct timespec wait = {(time_t)(timeout_usec / 1000000u), (long)(timeout_usec % 1000000u) * 1000L};
  int was_present = host_present;
  if (to_host.len > 0u) {
    p.events |= POLLOUT;
  }
  if (ppoll(&p, 1, &wait, NULL) < 0) {
    if (errno == EINTR) {
      return;
    }
    die("poll on the terminal");
  }
  host_present = (p.revents & POLLHUP) == 0;
  if (!host_present) {
    to_host.len = 0; /* a line with nobody listening: the bytes are gone, as on a real wire */
    if (was_present) {
      to_board.len = 0;
    }
    if (timeout_usec > 0u) {
      usleep(timeout_usec < 1000u ? timeout_usec : 1000u); /* HUP makes poll return at once */
    }
    return;
  }
  if (p.revents & POLLIN) {
    uint8_t buf[4096];
    uint32_t room = QUEUE_BYTES - to_board.len;
    ssize_t n = read(master, buf, room < sizeof(buf) ? room : sizeof(buf));
    for (ssize_t i = 0; i < n; i++) {
      push(&to_board, buf[i]);
    }
  }
  while (to_host.len > 0u) {
    uint32_t run = to_host.len;
    if (run > QUEUE_BYTES - to_host.head) {
      run = QUEUE_BYTES - to_host.head;
    }
    ssize_t n = write(master, to_host.data + to_host.head, run);
    if (n <= 0) {
      break; /* the terminal is full: later */
    }
    to_host.head = (to_host.head + (uint32_t)n) % QUEUE_BYTES;
    to_host.len -= (uint32_t)n;
  }
  feed_uart();
}

/* The firmware sleeps: wait on the terminal for about as long (real time), instead of usleep. */
static void on_sleep(avr_t *a, avr_cycle_count_t how_long) {
  uint32_t usec = avr_pending_sleep_usec(a, how_long);
  service_terminal(usec < MAX_IDLE_USEC ? usec : MAX_IDLE_USEC);
}

/* Hold the firmware while the terminal is full, up to a limit, so a slow reader loses nothing. */
static void drain_backlog(void) {
  int waited = 0;
  while (host_present && to_host.len > QUEUE_BYTES / 2u && waited < STALL_LIMIT_MSEC) {
    service_terminal(1000u);
    waited++;
  }
  if (to_host.len > QUEUE_BYTES / 2u) {
    to_host.len = 0;
  }
}

static int open_terminal(void) {
  struct termios raw;
  int fd = posix_openpt(O_RDWR | O_NOCTTY);
  if (fd < 0 || grantpt(fd) != 0 || unlockpt(fd) != 0) {
    die("cannot make a pseudo-terminal");
  }
  /* Raw bytes both ways: no echo, no line editing, no CR/LF translation. */
  if (tcgetattr(fd, &raw) == 0) {
    cfmakeraw(&raw);
    tcsetattr(fd, TCSANOW, &raw);
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  /* Until its other end has been opened once, a master reports no hang-up, as if a host had the
   * terminal open: open and close it, so that terminal_open() tells the truth from the start. */
  int other = open(ptsname(fd), O_RDWR | O_NOCTTY);
  if (other < 0) {
    die("cannot open the pseudo-terminal");
  }
  close(other);
  return fd;
}

/* simavr's messages go to stderr (stdout carries the terminal's path), warnings and errors only. */
static void log_to_stderr(avr_t *a, const int level, const char *format, va_list ap) {
  (void)a;
  if (level <= LOG_WARNING) {
    vfprintf(stderr, format, ap);
  }
}

static void usage(void) {
  fprintf(stderr, "usage: utvm-simavr-bridge --mcu MCU --freq HZ [--start-on-stdin] FIRMWARE.elf\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *mcu = NULL;
  const char *firmware = NULL;
  unsigned long freq = 0;
  int start_on_stdin = 0;
  elf_firmware_t fw;
  uint32_t flags = 0;
  int state;

#ifdef __linux__
  /* Never outlive the process that started us, even if it is killed. */
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) {
    return 1;
  }
#endif
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--mcu") == 0 && i + 1 < argc) {
      mcu = argv[++i];
    } else if (strcmp(argv[i], "--freq") == 0 && i + 1 < argc) {
      freq = strtoul(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--start-on-stdin") == 0) {
      start_on_stdin = 1;
    } else if (argv[i][0] == '-' || firmware != NULL) {
      usage();
    } else {
      firmware = argv[i];
    }
  }
  if (mcu == NULL || freq == 0 || firmware == NULL) {
    usage();
  }
  avr_global_logger_set(log_to_stderr);
  memset(&fw, 0, sizeof(fw));
  if (elf_read_firmware(firmware, &fw) != 0) {
    fprintf(stderr, "utvm-simavr-bridge: cannot read the firmware %s\n", firmware);
    return 2;
  }
  snprintf(fw.mmcu, sizeof(fw.mmcu), "%s", mcu);
  fw.frequency = (uint32_t)freq;
  avr = avr_make_mcu_by_name(fw.mmcu);
  if (avr == NULL) {
    fprintf(stderr, "utvm-simavr-bridge: simavr has no core %s\n", mcu);
    return 2;
  }
  avr_init(avr);
  avr_load_firmware(avr, &fw);
  avr->sleep = on_sleep;

  /* Bytes go to us only: no console echo, no polling slow-down. */
  avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
  uart_input = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
  avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT), on_uart_output, NULL);
  avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON), on_xon, NULL);
  avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF), on_xoff, NULL);

  master = open_terminal();
  printf("pty %s\n", ptsname(master));
  fflush(stdout);
  if (start_on_stdin) {
    char go;
    if (read(STDIN_FILENO, &go, 1) != 1) {
      return 1; /* the host went away before it started the firmware */
    }
  } else {
    while (!terminal_open()) {
      usleep(2000);
    }
  }
  host_present = terminal_open();

  avr_cycle_count_t next_look = 0;
  do {
    state = avr_run(avr);
    if (avr->cycle >= next_look) {
      next_look = avr->cycle + POLL_CYCLES;
      service_terminal(0);
      drain_backlog();
    }
  } while (state != cpu_Done && state != cpu_Crashed);

  /* The last bytes reach a host that is still there, which reads them and closes the terminal. */
  for (int i = 0; i < LINGER_MSEC / 10 && host_present; i++) {
    service_terminal(10000u);
  }
  fprintf(stderr, "cycles %llu\n", (unsigned long long)avr->cycle);
  avr_terminate(avr);
  return state == cpu_Done ? 0 : 3;
}
