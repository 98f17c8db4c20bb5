"""The CMSIS-NN column of the Cortex-M section: the same int8 layers, run by CMSIS-NN under QEMU.

CMSIS-NN is never shipped: the user fetches a checkout and passes it with `--cmsis-nn DIR`; this
module builds it. For a model, it takes the layers utvm's kernel library runs (the compiled plan's
kernels tagged with their int8 spec: convolution, depthwise convolution, fully connected, add,
average pooling) with their original TFLite constants (weights, bias, per-channel multipliers and
shifts), writes one C file that calls CMSIS-NN's s8 functions with them in plan order, and times
each call with SysTick on the emulated board (QEMU `-icount shift=0`: one instruction per ns, so
a 25 MHz SysTick tick is 40 instructions, the unit the utvm device clock reports too).

Every layer reads one buffer and writes another (seeded random int8): CMSIS-NN's instruction
counts do not depend on the values, and the layer shapes, constants and parameters are the model's.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Float, 4-bit and LSTM sources: not needed for s8 layers (and some need more headers).
_OTHER_TYPES = re.compile(r"_(f16|f32)|_s4|lstm")
QEMU_TIMEOUT_S = 600
NS_PER_TICK = 40  # 25 MHz SysTick under -icount shift=0


@dataclass
class Layer:
    """One int8 layer: the plan's kernel index and name, its op and spec, its constants."""

    index: int
    name: str
    op: str
    spec: dict
    consts: list


def model_layers(model: Path) -> list:
    """The model's layers that utvm's kernel library runs, in plan order (see library_calls)."""
    from utvm.model_library import integer_kernels as ik
    from utvm.model_library.frontends import import_model
    from utvm.model_library.integer_ops import rewrite_integer_ops
    from utvm.model_library.library_calls import _library_kernel
    from utvm.model_library.lowering import lower, prim_funcs_in
    from utvm.model_library.plan import extract_plan
    from utvm.model_library.targets import parse_target

    imported = import_model(model, None, None, None, None)
    imported.mod, _ = rewrite_integer_ops(imported.mod, None)
    lowered = lower(imported.mod, parse_target("c"), imported.label)
    plan = extract_plan(lowered, imported.label, imported.output_names)
    funcs = prim_funcs_in(lowered)
    layers = []
    for kernel in plan.kernels:
        func = funcs.get(kernel.prim_func)
        tagged = ik.spec_of(func) if func is not None else None
        if tagged is None or _library_kernel(kernel.prim_func, func, plan, kernel) is None:
            continue
        consts = []
        for tid in kernel.args:
            tensor = plan.tensors[tid]
            if tensor.storage == "const":
                root = plan.tensors[tensor.root]
                consts.append(np.ascontiguousarray(root.const_data).reshape(tensor.shape))
        layers.append(Layer(kernel.index, kernel.name, tagged[0], tagged[1], consts))
    return layers


def _array(ctype: str, name: str, values) -> str:
    flat = np.asarray(values).reshape(-1)
    body = ",".join(str(int(v)) for v in flat) if flat.size else "0"
    return f"static const {ctype} {name}[{max(flat.size, 1)}] = {{{body}}};"


def _weighted(layer: Layer):
    """(weights, bias, multipliers, shifts) of a convolution or fully connected layer."""
    if layer.spec["has_bias"]:
        weights, bias, mult, shift = layer.consts
    else:
        weights, mult, shift = layer.consts
        bias = None
    channels = layer.spec["weight_shape"][0]
    bias = np.zeros(channels, np.int32) if bias is None else bias.reshape(-1)
    return weights, bias, np.broadcast_to(mult.reshape(-1), (channels,)), np.broadcast_to(
        shift.reshape(-1), (channels,))


def _conv_call(i: int, layer: Layer, lines: list, calls: list) -> int:
    s = layer.spec
    n, h, w, c = s["data_shape"]
    o, kh, kw, ipg = s["weight_shape"]
    (sh, sw), (dh, dw) = s["strides"], s["dilation"]
    top, left, bottom, right = s["padding"]
    oh = (h + top + bottom - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + left + right - (dw * (kw - 1) + 1)) // sw + 1
    weights, bias, mult, shift = _weighted(layer)
    depthwise = int(s["groups"]) > 1
    if depthwise:  # CMSIS-NN's depthwise filter is [1, KH, KW, C]
        weights = weights.reshape(o, kh * kw).T
    lines += [_array("int8_t", f"w{i}", weights), _array("int32_t", f"b{i}", bias),
              _array("int32_t", f"m{i}", mult), _array("int32_t", f"s{i}", shift)]
    act = f"{{{s['activation'][0]}, {s['activation'][1]}}}"
    common = (f"{-int(s['input_zero_point'])}, {int(s['output_zero_point'])}")
    tiles = f"{{{sw}, {sh}}}, {{{left}, {top}}}, {{{dw}, {dh}}}, {act}"
    dims = (f"cmsis_nn_dims in = {{{n}, {h}, {w}, {c}}}, out = {{{n}, {oh}, {ow}, {o}}}, "
            f"bd = {{1, 1, 1, {o}}};")
    quant = f"cmsis_nn_per_channel_quant_params q = {{(int32_t *)m{i}, (int32_t *)s{i}}};"
    if depthwise:
        calls.append(
            f"  {{ cmsis_nn_dw_conv_params p = {{{common}, 1, {tiles}}}; {quant}\n"
            f"    {dims} cmsis_nn_dims f = {{1, {kh}, {kw}, {o}}};\n"
            f"    cmsis_nn_context ctx = {{scratch, "
            f"arm_depthwise_conv_wrapper_s8_get_buffer_size(&p, &in, &f, &out)}};\n"
            f"    T0; arm_depthwise_conv_wrapper_s8(&ctx, &p, &q, &in, src, &f, w{i}, &bd, b{i}, &out, dst); "
            f"T1({layer.index}, \"{layer.name}\"); }}")
    else:
        calls.append(
            f"  {{ cmsis_nn_conv_params p = {{{common}, {tiles}}}; {quant}\n"
            f"    {dims} cmsis_nn_dims f = {{{o}, {kh}, {kw}, {ipg}}};\n"
            f"    cmsis_nn_context ctx = {{scratch, "
            f"arm_convolve_wrapper_s8_get_buffer_size(&p, &in, &f, &out)}};\n"
            f"    T0; arm_convolve_wrapper_s8(&ctx, &p, &q, &in, src, &f, w{i}, &bd, b{i}, &out, dst); "
            f"T1({layer.index}, \"{layer.name}\"); }}")
    return max(n * h * w * c, n * oh * ow * o)


def _dense_call(i: int, layer: Layer, lines: list, calls: list) -> int:
    s = layer.spec
    n, k = s["data_shape"]
    m = s["weight_shape"][0]
    weights, bias, mult, shift = _weighted(layer)
    lines += [_array("int8_t", f"w{i}", weights), _array("int32_t", f"b{i}", bias),
              _array("int32_t", f"m{i}", mult), _array("int32_t", f"s{i}", shift)]
    act = f"{{{s['activation'][0]}, {s['activation'][1]}}}"
    offsets = f"{-int(s['input_zero_point'])}, 0, {int(s['output_zero_point'])}"
    params = f"cmsis_nn_fc_params p = {{{offsets}, {act}}};"
    dims = (f"cmsis_nn_dims in = {{{n}, 1, 1, {k}}}, f = {{{k}, 1, 1, {m}}}, bd = {{1, 1, 1, {m}}}, "
            f"out = {{{n}, 1, 1, {m}}};")
    ctx = "cmsis_nn_context ctx = {scratch, arm_fully_connected_s8_get_buffer_size(&f)};"
    if len(set(mult.tolist())) == 1 and len(set(shift.tolist())) == 1:
        call = (f"{{ cmsis_nn_per_tensor_quant_params q = {{{int(mult[0])}, {int(shift[0])}}}; "
                f"T0; arm_fully_connected_s8(&ctx, &p, &q, &in, src, &f, w{i}, &bd, b{i}, &out, dst); }}")
    else:
        call = (f"{{ cmsis_nn_per_channel_quant_params q = {{(int32_t *)m{i}, (int32_t *)s{i}}}; "
                f"T0; arm_fully_connected_per_channel_s8(&ctx, &p, &q, &in, src, &f, w{i}, &bd, b{i}, &out, "
                f"dst); }}")
    calls.append(f"  {{ {params}\n    {dims}\n    {ctx}\n    {call} T1({layer.index}, \"{layer.name}\"); }}")
    return max(n * k, n * m)


def _add_call(i: int, layer: Layer, lines: list, calls: list) -> int:
    s = layer.spec
    count = int(np.prod(s["shape"]))
    (m1, s1), (m2, s2) = s["input_multipliers"]
    zp1, zp2 = s["input_zero_points"]
    om, osh = s["output_multiplier"]
    calls.append(
        f"  T0; arm_elementwise_add_s8(src, src2, {-int(zp1)}, {int(m1)}, {int(s1)}, {-int(zp2)}, {int(m2)}, "
        f"{int(s2)}, {int(s['left_shift'])}, dst, {int(s['output_zero_point'])}, {int(om)}, {int(osh)}, "
        f"{s['activation'][0]}, {s['activation'][1]}, {count}); T1({layer.index}, \"{layer.name}\");")
    return count


def _avg_pool_call(i: int, layer: Layer, lines: list, calls: list) -> int:
    s = layer.spec
    n, h, w, c = s["data_shape"]
    (ph, pw), (sh, sw) = s["pool"], s["strides"]
    top, left, bottom, right = s["padding"]
    oh = (h + top + bottom - ph) // sh + 1
    ow = (w + left + right - pw) // sw + 1
    calls.append(
        f"  {{ cmsis_nn_pool_params p = {{{{{sw}, {sh}}}, {{{left}, {top}}}, "
        f"{{{s['activation'][0]}, {s['activation'][1]}}}}};\n"
        f"    cmsis_nn_dims in = {{{n}, {h}, {w}, {c}}}, f = {{1, {ph}, {pw}, 1}}, "
        f"out = {{{n}, {oh}, {ow}, {c}}};\n"
        f"    cmsis_nn_context ctx = {{scratch, arm_avgpool_s8_get_buffer_size({ow}, {c})}};\n"
        f"    T0; arm_avgpool_s8(&ctx, &p, &in, src, &f, &out, dst); T1({layer.index}, \"{layer.name}\"); }}")
    return max(n * h * w * c, n * oh * ow * c)


_CALLS = {"conv2d": _conv_call, "dense": _dense_call, "add": _add_call, "avg_pool2d": _avg_pool_call}

_HARNESS = r"""
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
static uint32_t t_start;
#define T0 (t_start = SYST_CVR)
#define T1(index, name) report(index, name, (t_start - SYST_CVR) & 0xFFFFFFu)

static void semihost(uint32_t op, const void *arg) {
  register uint32_t r0 __asm__("r0") = op;
  register const void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
}

static void put(const char *text) { semihost(0x04u, text); }

static void report(int index, const char *name, uint32_t ticks) {
  char line[96];
  char digits[12];
  int n = 0, d = 0;
  uint32_t v;
  line[n++] = 'L';
  line[n++] = ' ';
  for (v = (uint32_t)index; v || !d; v /= 10u) digits[d++] = (char)('0' + v % 10u);
  while (d) line[n++] = digits[--d];
  line[n++] = ' ';
  for (v = ticks; v || !d; v /= 10u) digits[d++] = (char)('0' + v % 10u);
  while (d) line[n++] = digits[--d];
  line[n++] = ' ';
  while (*name && n < 92) line[n++] = *name++;
  line[n++] = '\n';
  line[n] = 0;
  put(line);
}

extern uint32_t __stack_top;
void reset(void);
__attribute__((section(".vectors"), used)) static const void *vectors[2] = {&__stack_top, (void *)reset};

static void fill(int8_t *p, uint32_t n, uint32_t seed) {
  uint32_t i;
  for (i = 0; i < n; ++i) {
    seed = seed * 1664525u + 1013904223u;
    p[i] = (int8_t)(seed >> 24);
  }
}
"""

_LINKER = """MEMORY {{ FLASH (rx) : ORIGIN = {flash:#x}, LENGTH = {flash_len}
         RAM (rwx) : ORIGIN = {ram:#x}, LENGTH = {ram_len} }}
SECTIONS {{
  .text : {{ KEEP(*(.vectors)) *(.text*) *(.rodata*) }} > FLASH
  .bss (NOLOAD) : {{ *(.bss*) *(COMMON) }} > RAM
  __stack_top = ORIGIN(RAM) + LENGTH(RAM);
}}
"""


def peer_source(layers: list) -> str:
    """The C of the CMSIS-NN peer: every layer called once, in plan order, timed."""
    lines = ["#include <stdint.h>", "#include <string.h>", '#include "arm_nnfunctions.h"', _HARNESS]
    calls: list = []
    biggest = 1
    for i, layer in enumerate(layers):
        biggest = max(biggest, _CALLS[layer.op](i, layer, lines, calls))
    lines += [f"static int8_t src[{biggest}], src2[{biggest}], dst[{biggest}];",
              "static int8_t scratch[65536] __attribute__((aligned(8)));",
              "void reset(void) {",
              "  fill(src, sizeof src, 1u); fill(src2, sizeof src2, 2u);",
              "  SYST_RVR = 0xFFFFFFu; SYST_CVR = 0u; SYST_CSR = 5u;",
              "  while (SYST_CVR == 0u) {}",
              *calls,
              '  put("END\\n");',
              "  { static const uint32_t block[2] = {0x20026u, 0u}; semihost(0x18u, block); }",
              "  for (;;) {}",
              "}", ""]
    return "\n".join(lines)


def _arch_flags(board) -> list:
    flags = [f"-mcpu={board.cpu}", "-mthumb"]
    if board.fpu:
        flags += [f"-mfpu={board.fpu}", f"-mfloat-abi={board.float_abi}"]
    return flags


def build_library(cmsis_dir: Path, board, cflags: str, workdir: Path) -> Path:
    """CMSIS-NN's int8 sources as a static library for `board`'s CPU and `cflags` (built once)."""
    library = workdir / f"libcmsis-nn-{board.cpu}{cflags.replace(' ', '')}.a"
    if library.exists():
        return library
    sources = sorted(p for p in (cmsis_dir / "Source").glob("*/*.c") if not _OTHER_TYPES.search(p.name))
    if not sources:
        raise FileNotFoundError(f"{cmsis_dir} has no CMSIS-NN sources (Source/*/*.c)")
    objects = workdir / f"obj-{board.cpu}{cflags.replace(' ', '')}"
    objects.mkdir(parents=True, exist_ok=True)
    for source in sources:
        _run(["arm-none-eabi-gcc", *_arch_flags(board), *cflags.split(), "-ffunction-sections",
              "-fdata-sections", "-I", str(cmsis_dir / "Include"), "-c", str(source),
              "-o", str(objects / (source.stem + ".o"))])
    _run(["arm-none-eabi-ar", "rcs", str(library), *map(str, sorted(objects.glob("*.o")))])
    return library


def build_peer(layers: list, library: Path, cmsis_dir: Path, board, cflags: str, workdir: Path) -> Path:
    """The peer's ELF for `board` (a boards.Board) built with `cflags` (e.g. "-Os")."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "peer.c").write_text(peer_source(layers))
    memory = board.memory
    (workdir / "peer.ld").write_text(_LINKER.format(
        flash=int(memory["flash"]["origin"]), flash_len=int(memory["flash"]["length"]),
        ram=int(memory["ram"]["origin"]), ram_len=int(memory["ram"]["length"])))
    elf = workdir / "peer.elf"
    _run(["arm-none-eabi-gcc", *_arch_flags(board), *cflags.split(), "-ffunction-sections", "-fdata-sections",
          "-I", str(cmsis_dir / "Include"), str(workdir / "peer.c"), str(library),
          "-nostartfiles", "-T", str(workdir / "peer.ld"), "-Wl,--gc-sections", "--specs=nano.specs",
          "--specs=nosys.specs", "-o", str(elf)])
    return elf


def _run(command: list) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        what = " ".join(command[:3])
        raise RuntimeError(f"building the CMSIS-NN peer failed: {what}...: {result.stderr[-1500:]}")


def run_peer(elf: Path, board) -> dict:
    """{kernel index: instructions} of one run of the peer under QEMU (-icount shift=0)."""
    emulator = board.emulator
    command = [emulator["system"], "-M", emulator["machine"], "-cpu", emulator["cpu"], "-icount", "shift=0",
               "-nographic", "-monitor", "none", "-serial", "none",
               "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=QEMU_TIMEOUT_S)
    text = result.stdout + result.stderr  # QEMU writes semihosting output to stderr
    if "END" not in text:
        raise RuntimeError(f"the CMSIS-NN peer did not finish: {text[-500:]}")
    counts = {}
    for match in re.finditer(r"^L (\d+) (\d+) (\S+)$", text, re.M):
        counts[int(match.group(1))] = int(match.group(2)) * NS_PER_TICK
    return counts
