"""Run by the board's Python (the Jetson template sends it over SSH at build, for device=cuda): does
the board have the CUDA compiler TVM will use? TVM 0.27 compiles a library's CUDA kernels when the
board loads it, through tvm.support.nvcc: with NVRTC (the cuda-bindings package) unless
TVM_CUDA_COMPILE_MODE=nvcc, then with nvcc. Prints what it found; exits 3 when there is none."""

import os
import shutil
import sys

NONE_FOUND = 3


def main() -> int:
    mode = os.environ.get("TVM_CUDA_COMPILE_MODE", "nvrtc").lower()
    if mode == "nvcc":
        cuda = os.environ.get("CUDA_PATH", "/usr/local/cuda")
        nvcc = shutil.which("nvcc") or (os.path.join(cuda, "bin", "nvcc")
                                         if os.path.exists(os.path.join(cuda, "bin", "nvcc")) else None)
        print(f"nvcc at {nvcc}" if nvcc else f"TVM_CUDA_COMPILE_MODE=nvcc, but no nvcc on PATH or in {cuda}")
        return 0 if nvcc else NONE_FOUND
    try:
        import cuda.bindings.nvrtc  # noqa: F401
    except ImportError as err:
        print(f"TVM uses NVRTC there, and the board's Python cannot import it ({err})")
        return NONE_FOUND
    print("NVRTC (cuda-bindings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
