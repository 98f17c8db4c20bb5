"""The Jetson template's helpers: SSH to the board, TVM's RPC server on it, ELF checks, and the
arm64 root the emulated board runs TVM in. Standard library only; generated projects carry them."""
