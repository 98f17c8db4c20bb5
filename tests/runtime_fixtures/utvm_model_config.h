/* Sizes of the hand-written fixture model (what model_library generates for a real one). */
#ifndef UTVM_MODEL_CONFIG_H_
#define UTVM_MODEL_CONFIG_H_

#define FIXTURE_N 1000
/* A large tensor no kernel touches, for transfer tests; -D it bigger to benchmark. */
#ifndef FIXTURE_BIG_BYTES
#define FIXTURE_BIG_BYTES 65536
#endif
#define FIXTURE_BIG_OFFSET 3024
#define UTVM_MODEL_ARENA_BYTES (FIXTURE_BIG_OFFSET + FIXTURE_BIG_BYTES)
#define UTVM_MODEL_ARENA_ALIGNMENT 16
#define UTVM_MODEL_WORKSPACE_BYTES 1008
#define UTVM_MODEL_NUM_KERNELS 3
#define UTVM_MODEL_NUM_TENSORS 5

#endif
