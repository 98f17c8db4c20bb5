"""Plain-text tables for the benchmark report."""

from __future__ import annotations

from typing import Optional, Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-align the first column, right-align the rest; a dashed rule under the header."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells):
        first = str(cells[0]).ljust(widths[0])
        return "  ".join([first, *(str(c).rjust(w) for c, w in zip(cells[1:], widths[1:]))]).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def fmt(value: Optional[float], digits: int = 3) -> str:
    """A figure with `digits` significant digits, or "n/a" when it was not measured."""
    if value is None:
        return "n/a"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """a / b, or None when either is missing."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def verdict(value: Optional[float], *, at_most: Optional[float] = None,
            at_least: Optional[float] = None) -> str:
    """"met" / "MISSED" against a goal on a ratio, or "n/a"."""
    if value is None:
        return "n/a"
    ok = (at_most is None or value <= at_most) and (at_least is None or value >= at_least)
    return "met" if ok else "MISSED"


def transport_table(t: dict, nbytes: int) -> str:
    """The no-op round trip and tensor transfers, with ratios and the issue's goals."""
    def get(peer, key):
        return (t.get(peer) or {}).get(key)

    mib = f"{nbytes / (1 << 20):g} MiB"
    throughput_goals = {"tvm_rpc": {"at_least": 4.0}, "raw_pipe": {"at_least": 0.3}}
    specs = [
        ("no-op round trip (us)", "round_trip_s", 1e6, {"tvm_rpc": {"at_most": 0.5}}),
        (f"upload {mib} (MiB/s)", "upload_mib_s", 1.0, throughput_goals),
        (f"download {mib} (MiB/s)", "download_mib_s", 1.0, throughput_goals),
    ]
    peers = ("utvm", "tvm_rpc", "raw_pipe")
    rows = []
    for label, key, scale, goals in specs:
        values = {p: (None if get(p, key) is None else get(p, key) * scale) for p in peers}
        cells = [label, *(fmt(values[p]) for p in peers)]
        for peer in ("tvm_rpc", "raw_pipe"):
            r = ratio(values["utvm"], values[peer])
            goal = goals.get(peer)
            text = fmt_ratio(r)
            if goal:
                bound = f"<={goal['at_most']}" if "at_most" in goal else f">={goal['at_least']}"
                text += f" (goal {bound}: {verdict(r, **goal)})"
            cells.append(text)
        rows.append(cells)
    headers = ["transport (pipe)", "utvm", "TVM RPC", "raw pipe", "utvm / TVM RPC", "utvm / raw pipe"]
    return table(headers, rows)


def model_table(models: dict) -> str:
    """Per-model latency in ms and utvm's time as a multiple of each peer's (lower is faster)."""
    rows = []
    for name, m in models.items():
        ms = {k: (None if m.get(k) is None else m[k] * 1e3) for k in ("utvm_s", "tvm_llvm_s", "tflite_s")}
        rows.append([
            name, fmt(ms["utvm_s"]), fmt(ms["tvm_llvm_s"]), fmt(ms["tflite_s"]),
            _goal(ratio(ms["utvm_s"], ms["tvm_llvm_s"]), 0.5), fmt_ratio(ratio(ms["utvm_s"], ms["tflite_s"])),
            fmt(m.get("utvm_max_diff")), fmt(m.get("tvm_llvm_max_diff")),
        ])
    headers = ["model latency (ms)", "utvm host", "TVM LLVM", "TFLite 1 thr", "utvm / TVM LLVM (goal <=0.5)",
               "utvm / TFLite", "utvm max|diff|", "LLVM max|diff|"]
    note = ("(times: lower is faster; TFLite: its optimized built-in kernels, no delegate; "
            "max|diff|: largest output difference from TFLite's)")
    return table(headers, rows) + "\n" + note


def size_table(sizes: dict) -> str:
    """`size` of the runtime objects built without a model, per toolchain."""
    rows = []
    for name, s in sizes.items():
        flash = s["text"] + s["data"]
        goal = f"{verdict(flash, at_most=8192)} (< 8 KiB)" if "Cortex-M" in name else ""
        rows.append([f"{name} {s['flags']}", s["text"], s["data"], s["bss"], flash, goal])
    headers = ["runtime code size, no model (bytes)", "text", "data", "bss", "flash", "goal"]
    return table(headers, rows)


def _goal(value: Optional[float], at_most: float) -> str:
    return "n/a" if value is None else f"{fmt_ratio(value)} {verdict(value, at_most=at_most)}"


def arena_table(arenas: dict) -> str:
    """utvm's arena (default, inputs kept) against TFLite Micro's activation plan, in bytes."""
    rows = []
    for name, a in arenas.items():
        default, kept, tflm = a["default"], a["keep_inputs"], a.get("tflite_micro")
        rows.append([name, f"{default['arena']:,}", f"{default['lower_bound']:,}", f"{kept['arena']:,}",
                     "n/a" if tflm is None else f"{tflm:,}", _goal(ratio(default["arena"], tflm), 1.0)])
    headers = ["arena (bytes)", "utvm", "lower bound", "utvm, inputs kept", "TFLite Micro plan",
               "utvm / TFLM (goal <=1)"]
    return table(headers, rows)


def cortex_m_table(summary: dict) -> str:
    """Instructions per inference under QEMU -icount, and utvm / CMSIS-NN on the layers both run."""
    rows = []
    for name, boards in summary.items():
        for board, flags in boards.items():
            for cflags, e in flags.items():
                r = e.get("ratio")
                goal = "n/a" if r is None else f"{_goal(r, e['goal'])} (<={e['goal']})"
                rows.append([f"{name} {board} ({e['cpu']}) {cflags}", _count(e.get("utvm_total")),
                             _count(e.get("utvm_layers")), _count(e.get("cmsis_nn_layers")), goal])
    headers = ["Cortex-M instructions", "utvm, inference", "utvm, CMSIS-NN's layers", "CMSIS-NN",
               "utvm / CMSIS-NN"]
    return table(headers, rows)


def cortex_m_layers(rows: list, title: str) -> str:
    """Per layer: utvm's and CMSIS-NN's instructions."""
    body = [[f"{i} {name}", _count(ours), _count(theirs), fmt_ratio(ratio(ours, theirs))]
            for i, name, ours, theirs in rows]
    return table([title, "utvm", "CMSIS-NN", "ratio"], body)


def _count(value) -> str:
    return "n/a" if value is None else f"{value:,}"
