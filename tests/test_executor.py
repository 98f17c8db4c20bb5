"""The executor: set_input / run / get_output checked against the archive's signature, device-timed
benchmark and profile, and layer-by-layer validation, on a real host device.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from host_driven_helpers import built_project, host_reference_outputs, small_tflite_archive
from utvm.host_driven import protocol as P
from utvm.host_driven.compare import compare
from utvm.host_driven.errors import DeviceError
from utvm.host_driven.executor import ModelMismatchError, Session
from utvm.host_driven.signature import ModelSignature, SignatureError
from utvm.host_driven.transport import SubprocessTransport
from utvm.model_library import load
from utvm.project_api.errors import UserError

METADATA = {
    "model_name": "toy",
    "inputs": [
        {
            "name": "image",
            "shape": [1, 4],
            "dtype": "int8",
            "tensor": 0,
            "quantization": {"scale": 0.5, "zero_point": 3},
        },
        {"name": "bias", "shape": [4], "dtype": "float32", "tensor": 1, "quantization": None},
    ],
    "outputs": [{"name": "scores", "shape": [1, 2], "dtype": "float32", "tensor": 5}],
}


# ---- signature checks (no device needed) --------------------------------------------------------


def test_inputs_resolve_by_name_index_and_digit_string():
    sig = ModelSignature(METADATA)
    assert sig.input("bias").tensor_id == 1
    assert sig.input(0).name == "image"
    assert sig.input("1").name == "bias"
    assert sig.output(0).name == "scores"


def test_unknown_input_lists_the_real_ones():
    sig = ModelSignature(METADATA)
    with pytest.raises(SignatureError, match="no input named 'imgae'") as caught:
        sig.input("imgae")
    assert "'image' int8[1,4]" in caught.value.hint and "'bias'" in caught.value.hint
    with pytest.raises(SignatureError, match="has no output 3"):
        sig.output(3)


def test_wrong_dtype_names_both_and_suggests_quantizing():
    sig = ModelSignature(METADATA)
    with pytest.raises(SignatureError, match=r"needs int8\[1,4\], got float32\[1,4\]") as caught:
        sig.check_input("image", np.zeros((1, 4), np.float32))
    assert "0.5" in caught.value.hint and "astype('int8')" in caught.value.hint


def test_wrong_shape_is_refused():
    sig = ModelSignature(METADATA)
    with pytest.raises(SignatureError, match=r"needs float32\[4\], got float32\[2,2\]") as caught:
        sig.check_input("bias", np.zeros((2, 2), np.float32))
    assert caught.value.hint == "reshape it"
    with pytest.raises(SignatureError, match=r"got float32\[5\]"):
        sig.check_input(1, np.zeros(5, np.float32))


def test_random_inputs_are_seeded_and_typed():
    sig = ModelSignature(METADATA)
    a, b = sig.random_inputs(7), sig.random_inputs(7)
    assert a["image"].dtype == np.int8 and a["image"].shape == (1, 4)
    assert a["bias"].dtype == np.float32 and a["bias"].shape == (4,)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(sig.random_inputs(8)["bias"], a["bias"])


# ---- tolerances ---------------------------------------------------------------------------------


def test_int_tolerance_is_one_for_quantized_data_and_zero_for_other_integers():
    ref = np.array([0, 10, -128], np.int8)
    assert compare(np.array([1, 9, -127], np.int8), ref).passed
    result = compare(np.array([2, 10, -128], np.int8), ref)
    assert not result.passed and result.mismatches == 1 and result.max_abs == 2
    assert compare(np.array([1, 9], np.int16), np.array([0, 10], np.int16)).passed
    assert not compare(np.array([1, 10], np.int32), np.array([0, 10], np.int32)).passed  # indices, shapes


def test_float_tolerance_follows_the_tensor_scale():
    ref = np.array([1000.0, 1.0, 0.0], np.float32)
    # 5e-2 absolute is within 1e-4 x max|ref| (= 0.1) for every element, the one near zero too.
    assert compare(ref + np.float32(5e-2), ref).passed
    result = compare(np.array([1000.0, 1.5, 0.0], np.float32), ref)
    assert not result.passed and result.mismatches == 1
    assert result.max_rel == pytest.approx(0.5)


def test_nan_matches_only_nan():
    ref = np.array([np.nan, 1.0], np.float32)
    assert compare(np.array([np.nan, 1.0], np.float32), ref).passed
    assert not compare(np.array([0.0, 1.0], np.float32), ref).passed
    assert not compare(np.array([1.0, np.nan], np.float32), np.array([1.0, 1.0], np.float32)).passed


# ---- on a real host device ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return small_tflite_archive(tmp_path_factory, quantized=True)


@pytest.fixture(scope="module")
def session(tmp_path_factory, archive):
    with Session.from_project(built_project(tmp_path_factory, archive), timeout=5.0) as sess:
        yield sess


@pytest.fixture
def inputs(session):
    return session.signature.random_inputs(3)


def test_outputs_match_the_host_reference(session, archive, inputs):
    session.set_inputs(inputs)
    seconds = session.run()
    assert seconds > 0
    expected = host_reference_outputs(archive, inputs)
    out_name = session.signature.outputs[0].name
    np.testing.assert_array_equal(session.get_output(0), expected[0])
    np.testing.assert_array_equal(session.get_output(out_name), expected[0])
    assert list(session.get_outputs()) == [out_name]
    # A second run on the same inputs gives the same answer (inputs are re-sent if a run clobbered them).
    session.run()
    np.testing.assert_array_equal(session.get_output(0), expected[0])


def test_bad_arrays_never_reach_the_device(session, inputs):
    name = session.signature.inputs[0].name
    session.set_input(name, inputs[name])
    with pytest.raises(SignatureError, match="needs int8"):
        session.set_input(name, inputs[name].astype(np.float32))
    with pytest.raises(SignatureError, match="no input named"):
        session.set_input("nope", inputs[name])
    assert np.array_equal(session.inputs[name], inputs[name])  # the good copy is kept
    session.run()


def test_device_errors_keep_the_session_usable(session, inputs):
    with pytest.raises(DeviceError, match="kernel"):
        session.run_kernel(999)
    session.set_inputs(inputs)
    session.run()


def test_benchmark_statistics(session, inputs):
    session.set_inputs(inputs)
    result = session.benchmark(number=3, repeat=4, warmup=1)
    assert len(result.raw) == 4 and len(result.ticks) == 4
    assert result.min <= result.median <= result.max
    assert result.min <= result.mean <= result.max
    assert result.mean == pytest.approx(np.mean(result.raw))
    assert result.std == pytest.approx(np.std(result.raw))
    assert result.raw[0] == pytest.approx(result.ticks[0] / 3 / result.timer_hz)
    with pytest.raises(ValueError, match="number and repeat"):
        session.benchmark(number=0)


def test_profile_names_every_kernel_as_in_the_archive(session, archive, inputs):
    session.set_inputs(inputs)
    report = session.profile(number=2, repeat=2)
    assert [r.name for r in report.rows] == [k["name"] for k in load(archive).kernels]
    assert [r.index for r in report.rows] == list(range(len(report.rows)))
    assert all(r.mean > 0 for r in report.rows)
    assert sum(r.share for r in report.rows) == pytest.approx(1.0)
    assert report.total == pytest.approx(sum(r.mean for r in report.rows))
    assert "total" in report.table()


def test_validate_against_the_host_reference(session, inputs):
    session.set_inputs(inputs)
    report = session.validate()
    assert report.passed, report.table()
    assert report.first_failure is None
    assert report.kernels_checked() == list(range(len(session.library.kernels)))
    assert report.verdict().startswith("PASS")


def test_validate_names_the_first_diverging_kernel(session, archive, inputs):
    session.set_inputs(inputs)
    library = load(archive)
    out = library.outputs[0]
    good = host_reference_outputs(archive, inputs)[0]
    bad = good.copy()
    bad.reshape(-1)[0] = np.int8(good.reshape(-1)[0] ^ 0x40)  # off by 64 in one element
    report = session.validate(reference={out["name"]: bad})
    assert not report.passed
    first = report.first_failure
    producer = next(k for k in library.kernels if out["tensor"] in k["outputs"])
    assert first.kernel_index == producer["index"] and first.kernel_name == producer["name"]
    assert first.comparison.mismatches == 1 and first.comparison.max_abs == 64
    assert f"kernel {producer['index']} ({producer['name']})" in report.verdict()
    # A callable reference gets the inputs by name and may key by tensor id.
    seen = {}

    def reference(given):
        seen.update(given)
        return {out["tensor"]: good}

    assert session.validate(reference=reference).passed
    assert np.array_equal(seen[library.inputs[0]["name"]], inputs[library.inputs[0]["name"]])
    with pytest.raises(UserError, match="does not have"):
        session.validate(reference={"no_such_tensor": good})


@pytest.mark.parametrize("transport", ["direct", "relay"])
def test_the_smallest_packet_carries_a_whole_session(tmp_path_factory, archive, inputs, transport):
    """64-byte packets, over the template's pipe and through its server: INFO (and its model hash)
    spans several, every transfer is many chunks."""
    project = built_project(tmp_path_factory, archive)
    with Session.from_project(project, transport=transport, timeout=5.0, max_packet=P.MIN_PACKET) as small:
        assert small.protocol.max_packet == P.MIN_PACKET
        assert small.info.model_hash == small.library.metadata["model_hash"]
        small.set_inputs(inputs)
        small.run()
        np.testing.assert_array_equal(small.get_output(0), host_reference_outputs(archive, inputs)[0])
        assert small.validate().passed


def test_a_hash_cut_short_by_an_older_runtime_is_named_as_such(session):
    cut = dataclasses.replace(session.info, model_hash=session.info.model_hash[:3])
    with pytest.raises(ModelMismatchError, match="reported only 3 characters of its model hash"):
        session._check_model(cut)


def test_a_device_with_another_model_is_refused(tmp_path_factory, archive):
    program = built_project(tmp_path_factory, archive) / "build" / "model_device"
    other = small_tflite_archive(tmp_path_factory, quantized=False)
    transport = SubprocessTransport([str(program)])
    with pytest.raises(ModelMismatchError, match="small_int8") as caught:
        Session(transport, other, timeout=5.0).open()
    assert "rebuild and flash" in caught.value.hint
    assert transport.returncode is not None  # the failed open closed the link and the device exited


def test_running_without_inputs_is_a_clear_error(tmp_path_factory, archive):
    with Session.from_project(built_project(tmp_path_factory, archive), transport="relay") as fresh:
        with pytest.raises(SignatureError, match="are not set"):
            fresh.run()


def test_large_transfers_report_progress(session, inputs, monkeypatch):
    import utvm.host_driven.executor as executor

    monkeypatch.setattr(executor, "PROGRESS_MIN_BYTES", 1)
    seen = []
    monkeypatch.setattr(session, "progress", lambda what, done, total: seen.append((what, done, total)))
    session.set_inputs(inputs)
    session.run()
    session.get_output(0)
    name = session.signature.inputs[0].name
    spec = session.signature.inputs[0]
    assert (f"input {name}", spec.nbytes, spec.nbytes) in seen
    assert any(what.startswith("tensor ") and done == total for what, done, total in seen)


def test_reset_reboots_the_device_and_the_session_carries_on(session, archive, inputs):
    session.set_inputs(inputs)
    session.run()
    before = session.get_output(0)
    boot = session.protocol.boot_nonce
    session.reset()  # the POSIX port re-executes the program: a real reboot on the same pipes
    assert session.protocol.boot_nonce != boot
    session.run()  # the inputs are gone on the device; the session sends them again
    np.testing.assert_array_equal(session.get_output(0), before)
