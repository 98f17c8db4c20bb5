/*
 * The device side of the MLPerf Tiny runner's serial protocol (benchmark/runner in
 * mlcommons/tiny), over the runtime's port (utvm/port.h) and AOT plan (utvm/plan.h).
 *
 * Commands are ASCII ending with '%'; every reply is a set of "\r\n" lines, the last one
 * "m-ready". The generated utvm_mlperf_config.h names the benchmark (kws01, vww01, ad01, ic01)
 * and says how the benchmark's input file maps onto the model's input and how its output
 * becomes the result vector. Portable C99: no stdio, no malloc.
 */
#ifndef UTVM_MLPERFTINY_H_
#define UTVM_MLPERFTINY_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The longest command, without its '%' (the runner's command buffer). */
#define UTVM_MLPERF_CMD_MAX 80u

/* How the bytes of an input file become the model's input (UTVM_MLPERF_INPUT_CONVERSION). */
#define UTVM_MLPERF_INPUT_COPY 0         /* the file is the input tensor's bytes */
#define UTVM_MLPERF_INPUT_U8_TO_I8 1     /* uint8 pixels, int8 input: subtract 128 */
#define UTVM_MLPERF_INPUT_QUANTIZE_F32 2 /* little-endian float32, int8 input: quantize */

/* The model's output element type (UTVM_MLPERF_OUTPUT_TYPE). */
#define UTVM_MLPERF_OUTPUT_I8 0  /* dequantized with the output's scale and zero point */
#define UTVM_MLPERF_OUTPUT_U8 1  /* likewise */
#define UTVM_MLPERF_OUTPUT_F32 2 /* as is */

/* What m-results carries (UTVM_MLPERF_RESULT). */
#define UTVM_MLPERF_RESULT_SCORES 0      /* every output element, as a float */
#define UTVM_MLPERF_RESULT_ANOMALY_MSE 1 /* mean squared difference of output and input (ad01) */

/* Print the boot lines (timestamp mode, init done, ready). Call once, after utvm_plan_init(). */
void utvm_mlperf_start(void);

/* Take bytes from the link; each '%' ends a command, which is answered before this returns. */
void utvm_mlperf_feed(const uint8_t *data, uint32_t n);

/* utvm_mlperf_start(), then feed what utvm_port_read() returns until the link fails; returns
 * the port's error. */
int32_t utvm_mlperf_serve(void);

#ifdef __cplusplus
}
#endif

#endif /* UTVM_MLPERFTINY_H_ */
