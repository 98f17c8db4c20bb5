/* A model with nothing in it: sizes the runtime alone (code size checks). */
#ifndef UTVM_MODEL_CONFIG_H_
#define UTVM_MODEL_CONFIG_H_

#define UTVM_MODEL_ARENA_BYTES 0
#define UTVM_MODEL_ARENA_ALIGNMENT 16
#define UTVM_MODEL_WORKSPACE_BYTES 0
#define UTVM_MODEL_NUM_KERNELS 0
#define UTVM_MODEL_NUM_TENSORS 0

#endif
