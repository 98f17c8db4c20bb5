/*
 * Compile-time configuration of the device runtime. Every value has a default
 * here; a template overrides one with -D on the compiler command line (or by
 * defining it before this header is included, e.g. from a board header).
 */
#ifndef UTVM_CONFIG_H_
#define UTVM_CONFIG_H_

/* Largest packet payload (bytes, excluding framing) the device accepts and
 * sends. The host proposes its own limit at HELLO; both use the smaller one.
 * Small MCUs keep this low; the POSIX host template raises it to the protocol's
 * maximum for throughput. It sizes the receive and transmit buffers (about 2x this
 * in RAM). */
#ifndef UTVM_MAX_PACKET
#define UTVM_MAX_PACKET 512
#endif
#if UTVM_MAX_PACKET < 64
#error "UTVM_MAX_PACKET must be at least 64 (the protocol's minimum packet)"
#endif
/* CRC-16/CCITT detects every 1-, 2- and 3-bit error only while the data it covers is at
 * most 32751 bits; past that, two flips 32767 bits apart cancel. So no packet is larger. */
#if UTVM_MAX_PACKET > 4093
#error "UTVM_MAX_PACKET must be at most 4093 (the largest packet CRC-16/CCITT fully protects)"
#endif

/* Device log level: 0 off, 1 error, 2 warn, 3 info, 4 debug. */
#ifndef UTVM_LOG_LEVEL
#define UTVM_LOG_LEVEL 3
#endif

/* Longest log text sent in one LOG packet (longer text is cut). */
#ifndef UTVM_LOG_MAX_TEXT
#define UTVM_LOG_MAX_TEXT 96
#endif

/* Bytes kept for the last kernel error text ("kind: message"), NUL included. */
#ifndef UTVM_BACKEND_ERROR_BYTES
#define UTVM_BACKEND_ERROR_BYTES 128
#endif

/* Most workspace allocations alive at once (nested TVMBackendAllocWorkspace). */
#ifndef UTVM_BACKEND_MAX_ALLOCS
#define UTVM_BACKEND_MAX_ALLOCS 32
#endif

/* Alignment of every workspace allocation, in bytes (a power of two). */
#ifndef UTVM_BACKEND_ALIGNMENT
#define UTVM_BACKEND_ALIGNMENT 16
#endif

/* Bytes read from the port per utvm_port_read call while serving, and the
 * staging buffer for escaped output per utvm_port_write call. Larger values
 * mean fewer port calls (system calls on POSIX); they cost stack/RAM. */
#ifndef UTVM_RX_CHUNK
#define UTVM_RX_CHUNK 64
#endif
#ifndef UTVM_TX_CHUNK
#define UTVM_TX_CHUNK 64
#endif

/* CRC implementation: 0 uses a 16-entry table (32 bytes of flash, ~2 lookups
 * per byte), 1 a 256-entry table (512 bytes, ~3x faster), 2 adds slicing by 8
 * (3.5 KiB more RAM, tables built on first use; several times faster again on a
 * superscalar core). Hosts with fast links (POSIX pipes, TCP) should set 2. */
#ifndef UTVM_CRC_TABLE
#define UTVM_CRC_TABLE 0
#endif

/* With UTVM_CRC_TABLE >= 1 on x86-64 (GCC or Clang): 1 computes the CRC of long runs with
 * carry-less multiplication (PCLMULQDQ) when the CPU has it, checked at run time, several times
 * faster than slicing by 8; the table stays for short runs and older CPUs. */
#ifndef UTVM_CRC_CLMUL
#define UTVM_CRC_CLMUL 0
#endif

/* Escaping and unescaping of frames (src/escape.c): 0 portable C only (a machine word a step),
 * 1 adds SSE2 on x86-64, 2 also AVX-512 VBMI2 where the CPU has it (checked at run time). Other
 * cores always use the portable code; a lower level lets tests run each path on any x86-64. */
#ifndef UTVM_ESCAPE_SIMD
#define UTVM_ESCAPE_SIMD 2
#endif

/* Requests the host may send before waiting for replies (reported to the host
 * at the handshake). Keep 1 unless the link buffers whole packets while the
 * device is busy (pipes, TCP, USB CDC): a bare UART would drop bytes. */
#ifndef UTVM_RX_WINDOW
#define UTVM_RX_WINDOW 1
#endif

/* Constants in a separate program memory (AVR's flash, read with LPM, not with plain loads):
 * define UTVM_CONST_COPY(dst, src, n) to copy n bytes of a constant tensor into RAM, e.g.
 * avr-libc's memcpy_P. READ then copies constants into the reply instead of sending them straight
 * from their address. Undefined (the default): constants are ordinary memory. */

#endif /* UTVM_CONFIG_H_ */
