"""Reading archives back (and refusing bad ones), the memory planner, targets, integer arithmetic."""

from __future__ import annotations

import io
import json
import math
import tarfile

import numpy as np
import pytest
from model_builders import build_onnx_model
from utvm import model_library as ml
from utvm.model_library import archive, memory_planner
from utvm.model_library.integer_kernels import quantize_multiplier, requantize
from utvm.model_library.targets import parse_target, target_string


@pytest.fixture(scope="module")
def good_archive(tmp_path_factory):
    folder = tmp_path_factory.mktemp("archive")
    return ml.compile(build_onnx_model("dense", folder / "dense.onnx"), folder / "dense.tar")


def _entries(path) -> dict:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _write_tar(path, entries: list):
    """entries: (TarInfo fields dict, data or None)."""
    with tarfile.open(path, "w") as tar:
        for fields, data in entries:
            info = tarfile.TarInfo(fields.pop("name"))
            for key, value in fields.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _with_metadata(good_archive, tmp_path, change) -> str:
    files = _entries(good_archive)
    meta = json.loads(files["metadata.json"])
    change(meta)
    files["metadata.json"] = json.dumps(meta).encode()
    return archive.write_archive(tmp_path / "changed.tar", files)


def test_archive_layout_and_determinism_fields(good_archive):
    library = ml.load(good_archive)
    names = library.file_names()
    assert "metadata.json" in names and "src/relax.txt" in names
    assert {
        "codegen/host/src/dense_kernels.c",
        "codegen/host/src/dense_constants.c",
        "codegen/host/src/dense_plan.c",
    } <= set(library.source_files())
    assert "codegen/host/include/utvm_model_config.h" in library.header_files()
    config = library.read("codegen/host/include/utvm_model_config.h").decode()
    assert f"#define UTVM_MODEL_ARENA_BYTES {library.memory['arena_bytes']}u" in config
    assert f"#define UTVM_MODEL_NUM_KERNELS {len(library.kernels)}u" in config
    with tarfile.open(good_archive) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
    meta = library.metadata
    assert meta["format_version"] == ml.FORMAT_VERSION and len(meta["model_hash"]) == 64
    assert meta["target"] == {"kind": "c"} and meta["target_str"] == "c"
    assert [p["name"] for p in meta["plan"]["pools"]] == ["arena", "workspace", "constants"]


def test_extract_writes_everything(good_archive, tmp_path):
    library = ml.load(good_archive)
    library.extract(tmp_path / "out")
    for name in library.file_names():
        assert (tmp_path / "out" / name).read_bytes() == library.read(name)


def test_input_c_array_helper(good_archive):
    text = ml.load(good_archive).input_c_array("x", np.arange(32, dtype=np.float32), symbol="x_data")
    assert "const float x_data[32]" in text and "31.0f" in text


@pytest.mark.parametrize(
    "name, why",
    [
        ("/etc/evil", "absolute path"),
        ("../evil", r"escapes the extraction folder"),
        ("codegen/../../evil", r"escapes the extraction folder"),
    ],
)
def test_load_refuses_escaping_paths(tmp_path, name, why):
    path = _write_tar(tmp_path / "bad.tar", [({"name": name}, b"x"), ({"name": "metadata.json"}, b"{}")])
    with pytest.raises(ml.ArchiveError, match=why):
        ml.load(path)


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_load_refuses_links(tmp_path, kind):
    path = _write_tar(
        tmp_path / "link.tar", [({"name": "metadata.json", "type": kind, "linkname": "/etc/passwd"}, None)]
    )
    with pytest.raises(ml.ArchiveError, match="links are not allowed"):
        ml.load(path)


def test_load_refuses_newer_format(good_archive, tmp_path):
    path = _with_metadata(good_archive, tmp_path, lambda m: m.update(format_version=ml.FORMAT_VERSION + 1))
    with pytest.raises(ml.ArchiveError, match="newer than this utvm reads"):
        ml.load(path)


@pytest.mark.parametrize(
    "change, why",
    [
        (lambda m: m.pop("plan"), "plan is missing"),
        (lambda m: m["plan"]["tensors"][0].update(offset=1 << 30), "past the arena"),
        (lambda m: m["plan"]["kernels"][0].update(args=[999]), "tensor ids below"),
        (lambda m: m["memory"].update(arena_bytes=-1), "not a byte count"),
        (lambda m: m.update(outputs=[]), "outputs is empty"),
        # Crafted archives (issue 18): strings that would reach build files, absurd shapes and sizes.
        (lambda m: m.update(model_name="x\n$(shell touch INJECTED)\nfoo"), "model_name .* not a C ident"),
        (lambda m: m.update(model_name="m" * 100_000), "model_name .* not a C ident"),
        (lambda m: m["plan"]["kernels"][0].update(function="f(); system(x)"), "function .* not a C ident"),
        (lambda m: m["plan"]["tensors"][0].update(name="a\nb"), "is not a printable name"),
        (lambda m: m["plan"]["tensors"][0].update(shape=["a", "b"]), "positive integers"),
        (lambda m: m["plan"]["tensors"][0].update(shape=[10**12, 10**12]), "positive integers below 2"),
        (lambda m: m["plan"]["tensors"][0].update(nbytes=m["plan"]["tensors"][0]["nbytes"] + 1), "needs"),
        (lambda m: m["memory"].update(arena_bytes=10**18), "not a byte count"),
        (lambda m: m["memory"].update(arena_bytes=m["memory"]["arena_bytes"] + (1 << 20)), "tensors end at"),
        (lambda m: m["inputs"][0].update(shape=[1]), "does not have the shape and dtype"),
    ],
)
def test_load_refuses_malformed_metadata(good_archive, tmp_path, change, why):
    with pytest.raises(ml.ArchiveError, match=why):
        ml.load(_with_metadata(good_archive, tmp_path, change))


def test_load_refuses_broken_files(good_archive, tmp_path):
    files = _entries(good_archive)
    files["metadata.json"] = b"{not json"
    with pytest.raises(ml.ArchiveError, match="not valid JSON"):
        ml.load(archive.write_archive(tmp_path / "json.tar", files))
    del files["metadata.json"]
    with pytest.raises(ml.ArchiveError, match="no metadata.json"):
        ml.load(archive.write_archive(tmp_path / "nometa.tar", files))
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(good_archive.read_bytes()[:700])
    with pytest.raises(ml.ArchiveError):
        ml.load(truncated)
    with pytest.raises(ml.ArchiveError, match="no such archive"):
        ml.load(tmp_path / "missing.tar")


def test_write_archive_leaves_nothing_on_failure(tmp_path):
    class Boom(bytes):
        def __len__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        archive.write_archive(tmp_path / "out.tar", {"a.txt": Boom(b"x")})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ memory planner


def test_planner_reaches_the_bound_on_a_chain_and_never_overlaps():
    rng = np.random.default_rng(0)
    for _ in range(30):
        buffers = []
        for key in range(int(rng.integers(2, 25))):
            first = int(rng.integers(0, 20))
            buffers.append(
                memory_planner.LiveBuffer(
                    key, int(rng.integers(1, 5000)), first, first + int(rng.integers(0, 6))
                )
            )
        offsets, arena = memory_planner.plan_offsets(buffers, 16)
        memory_planner.check_plan(buffers, offsets, arena, 16)
        assert arena >= memory_planner.peak_live_bytes(buffers)
    chain = [memory_planner.LiveBuffer(i, 1024 * (i % 3 + 1), i, i + 1) for i in range(10)]
    offsets, arena = memory_planner.plan_offsets(chain, 16)
    assert arena == memory_planner.peak_live_bytes(chain)


def test_check_plan_catches_overlap():
    a, b = memory_planner.LiveBuffer(0, 64, 0, 2), memory_planner.LiveBuffer(1, 64, 1, 3)
    with pytest.raises(AssertionError, match="overlap"):
        memory_planner.check_plan([a, b], {0: 0, 1: 32}, 128, 16)


# ------------------------------------------------------------------ targets


@pytest.mark.parametrize(
    "spec, expected",
    [
        (None, {"kind": "c"}),
        ("c", {"kind": "c"}),
        ("cortex-m4", {"kind": "c", "mcpu": "cortex-m4"}),
        ("c -mcpu=cortex-m7 -march=armv7e-m", {"kind": "c", "march": "armv7e-m", "mcpu": "cortex-m7"}),
        ('{"kind": "c", "mcpu": "cortex-m0plus"}', {"kind": "c", "mcpu": "cortex-m0plus"}),
        ({"mcpu": "cortex-m33"}, {"kind": "c", "mcpu": "cortex-m33"}),
    ],
)
def test_parse_target(spec, expected):
    assert parse_target(spec) == expected


def test_bad_targets_are_user_errors():
    for spec in ("llvm", "c -mcpu", '{"kind": ', {"kind": "cuda"}):
        with pytest.raises(ml.TargetError):
            parse_target(spec)
    assert target_string({"kind": "c", "mcpu": "cortex-m4"}) == "c -mcpu=cortex-m4"


def test_target_reaches_the_archive(tmp_path):
    model = build_onnx_model("softmax", tmp_path / "softmax.onnx")
    library = ml.load(ml.compile(model, tmp_path / "m4.tar", target="c -mcpu=cortex-m4"))
    assert library.metadata["target"]["mcpu"] == "cortex-m4"
    assert library.metadata["target_str"] == "c -mcpu=cortex-m4"
    with pytest.raises(ml.TargetError, match="rejects target"):
        ml.compile(model, tmp_path / "bad.tar", target={"kind": "c", "nonsense": 1})


# ------------------------------------------------------------------ TFLite's integer arithmetic


def _tflite_double(x: int, m: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier as TFLite's reference code computes it (gemmlowp rounding)."""
    left, right = max(shift, 0), max(-shift, 0)
    product = (x * (1 << left)) * m
    nudge = (1 << 30) if product >= 0 else 1 - (1 << 30)
    high = int(math.copysign(abs(product + nudge) // (1 << 31), product + nudge))
    mask = (1 << right) - 1
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if (high & mask) > threshold else 0)


def _tflite_single(x: int, m: int, shift: int) -> int:
    total = 31 - shift
    return (x * m + (1 << (total - 1))) >> total


@pytest.mark.parametrize("rounding, model", [("double", _tflite_double), ("single", _tflite_single)])
def test_requantize_matches_tflite_bit_for_bit(rounding, model):
    import tvm
    from tvm import te

    rng = np.random.default_rng(1)
    n = 4000
    x = np.concatenate([rng.integers(-(2**24), 2**24, n - 200), rng.integers(-4, 4, 200)]).astype(np.int32)
    m = rng.integers(2**30, 2**31 - 1, n).astype(np.int32)
    s = rng.integers(-20, 3, n).astype(np.int32)
    X, M, S = (te.placeholder((n,), "int32") for _ in range(3))
    Y = te.compute((n,), lambda i: requantize(X[i], M[i], S[i], rounding))
    built = tvm.tirx.build(te.create_prim_func([X, M, S, Y]), target="llvm")
    out = tvm.runtime.tensor(np.zeros(n, np.int32))
    built(*(tvm.runtime.tensor(a) for a in (x, m, s)), out)
    expected = [model(int(a), int(b), int(c)) for a, b, c in zip(x, m, s)]
    np.testing.assert_array_equal(out.numpy(), expected)


def test_quantize_multiplier():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    multiplier, shift = quantize_multiplier(0.0123)
    assert 1 << 30 <= multiplier < 1 << 31
    assert multiplier * 2.0 ** (shift - 31) == pytest.approx(0.0123, rel=1e-9)
