"""The small model `utvm demo` builds for itself, directly in Relax (no download, no ONNX).

A keyword-spotting-sized image net: conv 3x3 + bias + relu, depthwise conv 3x3 stride 2 + relu,
global average pool, dense + bias, softmax. Weights come from a seeded generator, so the model,
and therefore its compiled archive, is the same on every run.
"""

from __future__ import annotations

INPUT_NAME = "image"
INPUT_SHAPE = (1, 16, 16, 3)
NUM_CLASSES = 10
DEFAULT_SEED = 2024


def build_demo_module(seed: int = DEFAULT_SEED):
    """Return the demo model as a Relax `IRModule` whose `main` takes one float32 NHWC image.

    TVM is imported here, not at module level, so `utvm --help` stays fast.
    """
    import numpy as np
    from tvm import relax

    rng = np.random.default_rng(seed)

    def const(shape, scale):
        return relax.const((rng.standard_normal(shape) * scale).astype("float32"))

    nn = relax.op.nn
    channels = 8
    bb = relax.BlockBuilder()
    image = relax.Var(INPUT_NAME, relax.TensorType(INPUT_SHAPE, "float32"))
    with bb.function("main", [image]):
        with bb.dataflow():
            x = bb.emit(
                nn.conv2d(
                    image,
                    const((3, 3, 3, channels), 0.3),
                    padding=1,
                    data_layout="NHWC",
                    kernel_layout="HWIO",
                )
            )
            x = bb.emit(nn.relu(relax.op.add(x, const((channels,), 0.1))))
            x = bb.emit(
                nn.conv2d(
                    x,
                    const((3, 3, 1, channels), 0.3),
                    strides=2,
                    padding=1,
                    groups=channels,
                    data_layout="NHWC",
                    kernel_layout="HWIO",
                )
            )
            x = bb.emit(nn.relu(x))
            half = INPUT_SHAPE[1] // 2
            x = bb.emit(nn.avg_pool2d(x, pool_size=(half, half), layout="NHWC"))
            x = bb.emit(relax.op.reshape(x, (1, channels)))
            x = bb.emit(relax.op.matmul(x, const((channels, NUM_CLASSES), 0.5)))
            x = bb.emit(relax.op.add(x, const((NUM_CLASSES,), 0.1)))
            out = bb.emit_output(nn.softmax(x))
        bb.emit_func_output(out)
    return bb.get()


def demo_input(seed: int = DEFAULT_SEED):
    """A seeded float32 input image for the demo model, values in [-1, 1)."""
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    return rng.uniform(-1.0, 1.0, INPUT_SHAPE).astype("float32")


def run_relax_vm(module, image):
    """Run `module` on `image` with TVM's LLVM build and Relax VM: the demo's second opinion."""
    import tvm
    from tvm import relax

    executable = tvm.compile(module, target="llvm")
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(image)).numpy()
