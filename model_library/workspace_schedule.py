"""Schedule each kernel so that it needs as little scratch memory (workspace) as possible.

A fused kernel from FuseTIR computes every stage into a full-size temporary: the padded input,
the convolution's accumulator, each elementwise step. On a microcontroller those temporaries are
the workspace, often larger than the activations. Two schedule primitives remove them without
changing any arithmetic (each value is computed by the same expression, in the same order):
- inline every injective stage (padding, bias add, quantize, clip, casts) into its consumers;
- move an elementwise epilogue into the loop nest of the reduction that feeds it, after the
  reduction, so its accumulator shrinks to one element (a local variable).
A step that the schedule refuses is skipped, so the kernel stays correct either way.
"""

from __future__ import annotations


def minimize_workspace(func):
    """Return `func` rescheduled to keep fewer, smaller temporaries (or `func` unchanged)."""
    from tvm import s_tir

    try:
        sch = s_tir.Schedule(func, error_render_level="none")
        _inline_injective(sch)
        _fuse_epilogues(sch)
        return sch.mod["main"].with_attrs(func.attrs) if func.attrs else sch.mod["main"]
    except Exception:  # a schedule the primitives cannot express: keep TVM's kernel as it is
        return func


def _blocks(sch):
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _names(sch, blocks) -> list:
    return [sch.get(b).name_hint for b in blocks]


def _is_output(sch, block, outputs: set) -> bool:
    return sch.get(block).name_hint in outputs


def _inline_injective(sch) -> None:
    changed = True
    while changed:
        changed = False
        outputs = set(_names(sch, sch.get_output_blocks(sch.get_sblock("root"))))
        for block in _blocks(sch):
            if _is_output(sch, block, outputs) or not sch.get_consumers(block):
                continue
            try:
                sch.compute_inline(block)
                changed = True
                break
            except Exception:  # not injective, or its consumer cannot take it
                continue


def _fuse_epilogues(sch) -> None:
    for block in _blocks(sch):
        reduce_vars = _reduction_loop_vars(sch, block)
        if not reduce_vars:
            continue
        consumers = sch.get_consumers(block)
        loops = sch.get_loops(block)
        spatial = []
        for loop in loops:
            loop_var = sch.get(loop).loop_var
            if any(loop_var.same_as(v) for v in reduce_vars):
                break
            spatial.append(loop)
        if len(spatial) < len(loops):
            try:  # the accumulator's init before the reduction loops, not an `if` inside them
                sch.decompose_reduction(block, loops[len(spatial)])
            except Exception:
                pass
        if not spatial or len(consumers) != 1:
            continue
        try:  # after the reduction, inside its innermost spatial loop: the accumulator is complete
            sch.reverse_compute_at(consumers[0], spatial[-1], preserve_unit_loops=True)
        except Exception:
            continue


def _reduction_loop_vars(sch, block) -> list:
    """Loop variables that feed the block's reduction iterators (empty if it is not a reduction)."""
    from tvm import tirx

    loops = sch.get_loops(block)
    realize = sch.get(loops[-1]).body if loops else None
    if realize is None or not hasattr(realize, "iter_values") or not realize.block.same_as(sch.get(block)):
        return []
    found = []
    for iv, value in zip(realize.block.iter_vars, realize.iter_values):
        if int(iv.iter_type) == 2:  # IterVar.CommReduce
            found.extend(tirx.analysis.undefined_vars(value))
    return found
