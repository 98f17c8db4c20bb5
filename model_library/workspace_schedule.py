"""Schedule each kernel so that it needs as little scratch memory (workspace) as possible.

A fused kernel from FuseTIR computes every stage into a full-size temporary: the padded input,
the convolution's accumulator, each elementwise step. On a microcontroller those temporaries are
the workspace, often larger than the activations. Two schedule primitives remove them without
changing any arithmetic (each value is computed by the same expression, in the same order):
- inline every injective stage (padding, bias add, quantize, clip, casts) into its consumers;
- move an elementwise epilogue into the loop nest of the reduction that feeds it, after the
  reduction, so its accumulator shrinks to one element (a local variable).
A step that the schedule refuses is skipped, so the kernel stays correct either way.

`reverse_compute_at` sizes the moved block's loops from the region of the producer it reads, and
does not check that they still cover the block's own domain. An epilogue over a larger domain than
the reduction's (a pad to more channels fused with an add, say) loses the iterations that read no
produced element: those outputs are never written. So an epilogue moves only when its domain is
the reduction's spatial domain, and a move that leaves any block's iterations short of its domain
is undone (`covers_domains`).
"""

from __future__ import annotations


def minimize_workspace(func, vector_unit: bool = False):
    """Return `func` rescheduled to keep fewer, smaller temporaries (or `func` unchanged).

    `vector_unit` (a CPU with SIMD: the host) also turns float matrix-vector products whose
    inner reduction reads weights with a stride into loops over a row of outputs (see
    `_interchange_matvecs`), which the C compiler vectorizes; that keeps one row of accumulators
    in the workspace instead of a scalar."""
    from tvm import s_tir

    try:
        sch = s_tir.Schedule(func, error_render_level="none")
        _inline_injective(sch)
        if vector_unit:
            _interchange_matvecs(sch)
        sch = _fuse_epilogues(sch)
        result = sch.mod["main"].with_attrs(func.attrs) if func.attrs else sch.mod["main"]
    except Exception:  # a schedule the primitives cannot express: keep TVM's kernel as it is
        return func
    return result if covers_domains(result) else func


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


def _interchange_matvecs(sch) -> None:
    """Put the reduction loop of a float reduction outside its innermost spatial loop when that
    makes a strided read contiguous (a dense layer with weights [K][N]: w[k][n] read along k).
    Every output still sums its terms in the same order, from the same init, so the result is
    the same to the bit; but the inner loop is now over independent outputs, which gcc
    vectorizes without reassociating any sum."""
    for block in _blocks(sch):
        stmt = sch.get(block)
        kinds = [int(iv.iter_type) for iv in stmt.iter_vars]
        if kinds.count(2) != 1 or any(k not in (0, 2) for k in kinds) or len(stmt.writes) != 1:
            continue
        if "float" not in str(stmt.writes[0].source.dtype):
            continue
        loops = sch.get_loops(block)
        reduce_vars = _reduction_loop_vars(sch, block)
        if len(loops) < 2 or len(reduce_vars) != 1 or not sch.get(loops[-1]).loop_var.same_as(reduce_vars[0]):
            continue
        if int(sch.get(loops[-2]).extent) < 8:  # too few outputs in a row to vectorize
            continue
        if not _strided_along_reduction(sch, block, loops[-2], loops[-1]):
            continue
        try:
            sch.decompose_reduction(block, loops[-2])
            update = sch.get_sblock(stmt.name_hint + "_update")
            loops = sch.get_loops(update)
            sch.reorder(loops[-1], loops[-2])
        except Exception:  # the schedule refuses: the block stays as it is
            continue


def _strided_along_reduction(sch, block, spatial_loop, reduce_loop) -> bool:
    """True if some buffer the block reads is indexed contiguously by the spatial loop (its last
    index) and with a stride by the reduction loop (an earlier index)."""
    from tvm import tirx

    realize = sch.get(reduce_loop).body
    if not hasattr(realize, "iter_values"):
        return False
    spatial_var = sch.get(spatial_loop).loop_var
    reduce_var = sch.get(reduce_loop).loop_var
    binding = {}
    for iv, value in zip(realize.block.iter_vars, realize.iter_values):
        used = tirx.analysis.undefined_vars(value)
        if len(used) == 1:
            binding[iv.var] = used[0]
    for region in realize.block.reads:
        indices = [r.min for r in region.region]
        if len(indices) < 2:
            continue
        last = tirx.analysis.undefined_vars(indices[-1])
        earlier = [v for index in indices[:-1] for v in tirx.analysis.undefined_vars(index)]
        last_loops = [binding.get(v) for v in last]
        earlier_loops = [binding.get(v) for v in earlier]
        if (len(last_loops) == 1 and last_loops[0] is not None and last_loops[0].same_as(spatial_var)
                and any(v is not None and v.same_as(reduce_var) for v in earlier_loops)):
            return True
    return False


def _fuse_epilogues(sch):
    """Move each reduction's elementwise epilogue into its loop nest; return the schedule."""
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
        if not spatial or len(consumers) != 1 or not _same_spatial_domain(sch, block, consumers[0]):
            continue
        trial = sch.copy()  # the copy keeps the handles valid, so the loop goes on over it
        try:  # after the reduction, inside its innermost spatial loop: the accumulator is complete
            trial.reverse_compute_at(consumers[0], spatial[-1], preserve_unit_loops=True)
        except Exception:
            continue
        if covers_domains(trial.mod["main"]):
            sch = trial
    return sch


def _same_spatial_domain(sch, producer, consumer) -> bool:
    """True if `consumer` iterates over exactly the producer's spatial (non-reduction) domain."""
    spatial = [int(iv.dom.extent) for iv in sch.get(producer).iter_vars if int(iv.iter_type) == 0]
    consumer_iters = sch.get(consumer).iter_vars
    if any(int(iv.iter_type) != 0 for iv in consumer_iters):
        return False
    return [int(iv.dom.extent) for iv in consumer_iters] == spatial


def covers_domains(func) -> bool:
    """True if every block of `func` runs exactly once per point of its iteration domain.

    A block under loops whose extents multiply to its domain's size, with a trivially true
    predicate, computes every point of its domain (its bindings are affine, as every schedule
    primitive keeps them). A block that runs fewer times has lost iterations.
    """
    return _covers(func.body, 1)


def _covers(stmt, runs: int) -> bool:
    from tvm import tirx

    if stmt is None:
        return True
    if isinstance(stmt, tirx.For):
        return _covers(stmt.body, runs * int(stmt.extent))
    if hasattr(stmt, "iter_values") and hasattr(stmt, "block"):  # SBlockRealize
        block = stmt.block
        size = 1
        for iv in block.iter_vars:
            size *= int(iv.dom.extent)
        trivially_true = isinstance(stmt.predicate, tirx.IntImm) and int(stmt.predicate) == 1
        if block.iter_vars and (runs != size or not trivially_true):
            return False
        # A nested block runs once per instance of this one: count its loops afresh.
        return _covers(block.body, 1) and _covers(getattr(block, "init", None), 1)
    if isinstance(stmt, tirx.SeqStmt):
        return all(_covers(child, runs) for child in stmt.seq)
    if isinstance(stmt, tirx.IfThenElse):
        return _covers(stmt.then_case, runs) and _covers(stmt.else_case, runs)
    body = getattr(stmt, "body", None)
    return _covers(body, runs) if isinstance(body, tirx.Stmt) else True


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
