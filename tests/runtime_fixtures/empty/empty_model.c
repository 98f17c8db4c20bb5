/* A model with no tensors or kernels: with stub_port.c, the runtime alone, linked. */
#include <stddef.h>

#include "utvm/model.h"
#include "utvm/runtime.h"

const utvm_model_t utvm_model = {UTVM_MODEL_ABI_VERSION, "empty", "", 0, 16, 0, 0, NULL, 0, NULL, 0, NULL,
                                 0, NULL, NULL};

int main(void) {
  utvm_runtime_init();
  return (int)utvm_runtime_serve();
}
