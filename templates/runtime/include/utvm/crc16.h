/* CRC-16/CCITT-FALSE of the frames (see docs/host-driven-protocol.md, "Framing"). */
#ifndef UTVM_CRC16_H_
#define UTVM_CRC16_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The register after `n` more bytes, from `crc` (0xFFFF to start a frame). Portable C; needs
 * nothing from the port, so host tools can build it too. */
uint16_t utvm_crc16(uint16_t crc, const uint8_t *data, uint32_t n);

#ifdef __cplusplus
}
#endif

#endif /* UTVM_CRC16_H_ */
