/* Sizes of the fuzz fixture model (fuzz_model.c), as model_library would generate them. */
#ifndef UTVM_MODEL_CONFIG_H_
#define UTVM_MODEL_CONFIG_H_

#define UTVM_MODEL_ARENA_BYTES 48
#define UTVM_MODEL_ARENA_ALIGNMENT 16
#define UTVM_MODEL_WORKSPACE_BYTES 64

#endif /* UTVM_MODEL_CONFIG_H_ */
