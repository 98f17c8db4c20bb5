"""The board database: records, lookups, checks on bad records, `utvm boards`, and the fit check."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys

import pytest
from utvm.boards import PLATFORMS, all_boards, board_names, check_database, get_board, twin_of
from utvm.cli import boards_command as boards_cli
from utvm.project_api import board_records
from utvm.project_api.board_records import Footprint, check_fit, footprint_from_metadata
from utvm.project_api.errors import UserError

REQUIRED_BOARDS = [
    "mps2_an385", "mps2_an386", "mps2_an500", "nucleo_f746zg", "nucleo_l4r5zi", "nrf5340dk",
    "stm32f746g_disco", "mimxrt1050_evk", "arduino_uno", "arduino_mega2560", "arduino_nano33ble",
    "arduino_due", "arduino_portenta_h7", "arduino_rpipico", "jetson_nano", "jetson_xavier_nx",
    "jetson_orin_nano",
]


def test_every_required_board_is_recorded():
    names = board_names()
    assert len(names) == len(set(names))
    missing = [n for n in REQUIRED_BOARDS if n not in names]
    assert not missing


@pytest.mark.parametrize("name,cpu,fpu,machine", [
    ("mps2_an385", "cortex-m3", None, "mps2-an385"),
    ("mps2_an386", "cortex-m4", "fpv4-sp-d16", "mps2-an386"),
    ("mps2_an500", "cortex-m7", "fpv5-d16", "mps2-an500"),
])
def test_emulated_cortex_m_boards(name, cpu, fpu, machine):
    board = get_board(name)
    assert board.is_emulated and "baremetal" in board.platforms
    assert (board.cpu, board.fpu, board.target) == (cpu, fpu, {"kind": "c", "mcpu": cpu})
    assert board.emulator == {"system": "qemu-system-arm", "machine": machine, "cpu": cpu, "icount_shift": 0}
    assert board.flash_runner == "qemu"
    assert board.memory["ram"] == {"origin": 0x20000000, "length": board.ram_bytes}
    assert board.uart["base"] == 0x40004000


def test_real_boards_carry_their_facts():
    f746 = get_board("nucleo_f746zg")
    assert (f746.ram_bytes, f746.flash_bytes, f746.fpu) == (320 * 1024, 1024 * 1024, "fpv5-sp-d16")
    assert f746.usb_vid_pid == ("0483:374b",)
    assert get_board("arduino_uno").usb_vid_pid[0] == "2341:0043"
    assert get_board("arduino_uno").ram_bytes == 2048
    assert get_board("nucleo_l4r5zi").ram_bytes == 640 * 1024


def test_twins_link_physical_and_emulated_boards():
    for board in all_boards():
        twin = twin_of(board)
        if twin is None:
            continue
        assert {board.kind, twin.kind} == {"physical", "emulated"}
        if board.is_emulated:
            assert twin.twin == board.name
    assert twin_of(get_board("nucleo_f746zg")).name == "mps2_an500"
    assert twin_of(get_board("mps2_an500")).name == "nucleo_f746zg"


def test_platform_filter():
    baremetal = all_boards("baremetal")
    assert {b.name for b in baremetal} >= {"mps2_an385", "mps2_an386", "mps2_an500"}
    assert all("baremetal" in b.platforms for b in baremetal)
    for platform in PLATFORMS:
        assert all_boards(platform), f"no board for platform {platform}"
    with pytest.raises(UserError, match="unknown platform"):
        all_boards("windows")


def test_unknown_board_names_close_matches():
    with pytest.raises(UserError) as info:
        get_board("mps2_an368")
    assert "unknown board 'mps2_an368'" in str(info.value)
    assert "mps2_an386" in info.value.hint


def test_records_are_independent_copies():
    board = get_board("mps2_an386")
    board.target["mcpu"] = "changed"
    assert get_board("mps2_an386").target["mcpu"] == "cortex-m4"
    with pytest.raises(AttributeError):
        board.cpu = "cortex-m0"  # frozen


def test_to_dict_round_trips_through_json():
    record = json.loads(json.dumps(get_board("mps2_an386").to_dict()))
    assert record["platforms"] == ["baremetal"] and record["name"] == "mps2_an386"


def _raw(**changes):
    rec = dict(title="t", kind="physical", platforms=["zephyr"], cpu="cortex-m4", clock_hz=1,
               target={"kind": "c"}, fpu=None, float_abi="soft", ram_bytes=1024, flash_bytes=2048,
               memory=None, usb_vid_pid=[], baud=115200, runners={"openocd": {}}, emulator=None, twin=None)
    rec.update(changes)
    return rec


def _database(tmp_path, records) -> dict:
    """The records written as a boards.json, read back by the floor's reader and checked."""
    path = tmp_path / "boards.json"
    path.write_text(json.dumps(records))
    return check_database(board_records.load_board_records(path), source=str(path))


def test_bad_records_are_all_reported(tmp_path):
    with pytest.raises(UserError) as info:
        _database(tmp_path, {
            "a": _raw(usb_vid_pid=["483:374B"]),
            "d": _raw(colour="red"),
            "b": _raw(platforms=["windows"], fpu="fpv4-sp-d16", float_abi="soft", ram_bytes=-1),
            "c": _raw(twin="nowhere"),
            "e": _raw(runners={"openocd": ["interface/stlink.cfg"]}),
            "f": _raw(uart={"driver": "cmsdk", "base": "0xZZ", "rx_irq": 0}),
        })
    message = str(info.value)
    for expected in ("unknown field 'colour'", "bad USB id '483:374B'", "unknown platform 'windows'",
                     "needs float_abi hard", "ram_bytes must be a positive integer", "twin 'nowhere'",
                     "e: runners must map each runner's name to its arguments",
                     "f: uart.base must be an address"):
        assert expected in message


def _stm32(**changes) -> dict:
    """A sound STM32F4 bare-metal record, with changes."""
    rec = _raw(platforms=["baremetal"], clock_hz=84000000, ram_bytes=98304, flash_bytes=524288,
               memory={"flash": {"origin": "0x08000000", "length": 524288},
                       "ram": {"origin": "0x20000000", "length": 98304}},
               mcu={"part": "STM32F401RE", "irqs": 85},
               clock={"driver": "stm32f4", "hsi_hz": 16000000, "rcc_modelled": True,
                      "pll": {"m": 8, "n": 168, "p": 4, "q": 7, "apb1_div": 2, "apb2_div": 1,
                              "flash_latency": 2}},
               uart={"driver": "stm32f4_usart", "base": "0x40004400", "rx_irq": 38, "bus": "apb1",
                     "rcc_bit": 17, "tx": "PA2", "rx": "PA3", "af": 7})
    rec.update(changes)
    return rec


def test_stm32_records_are_checked(tmp_path):
    assert _database(tmp_path, {"ok": _stm32()})
    good = _stm32()
    with pytest.raises(UserError) as info:
        _database(tmp_path, {
            "clock": _stm32(clock_hz=100000000),
            "pin": _stm32(uart=dict(good["uart"], tx="PA16")),
            "irq": _stm32(mcu={"part": "STM32F401RE", "irqs": 30}),
            "div": _stm32(clock=dict(good["clock"], pll=dict(good["clock"]["pll"], apb1_div=3))),
            "ccm": _stm32(memory=dict(good["memory"], ccm={"origin": "CCM", "length": 65536})),
        })
    message = str(info.value)
    for expected in ("clock: clock_hz 100000000 is not what clock.pll makes (16000000 / 8 x 168 / 4)",
                     "pin: an STM32 uart needs driver 'stm32f4_usart'",
                     "irq: uart.rx_irq 38 is past the part's 30 interrupts",
                     "div: clock.pll needs m (2-63)", "ccm: memory.ccm.origin must be"):
        assert expected in message, message


def test_stm32_boards_and_their_twin():
    f401, f446, twin = get_board("nucleo_f401re"), get_board("nucleo_f446re"), get_board("netduinoplus2")
    assert (f401.ram_bytes, f401.flash_bytes, f446.ram_bytes, f446.flash_bytes) == (96 << 10, 512 << 10,
                                                                                  128 << 10, 512 << 10)
    for board in (f401, f446):
        assert board.kind == "physical" and board.platforms == ("baremetal",)
        assert board.usb_vid_pid == ("0483:374b",) and twin_of(board).name == "netduinoplus2"
        assert (board.uart["base"], board.uart["tx"], board.uart["rx"]) == (0x40004400, "PA2", "PA3")
        assert list(board.runners) == ["openocd", "pyocd"] and board.runners["pyocd"]["target"]
    # QEMU wires its first -serial to USART1; its RCC is not modelled.
    assert (twin.uart["base"], twin.uart["rx_irq"], twin.clock["rcc_modelled"]) == (0x40011000, 37, False)
    assert twin.memory["ccm"] == {"origin": 0x10000000, "length": 64 << 10}
    assert twin.emulator["machine"] == "netduinoplus2" and twin_of(twin).name == "nucleo_f446re"
    # The newer USART (ISR / RDR / TDR) of the F7 and L4 parts has no driver here: Zephyr only.
    for name in ("nucleo_f746zg", "stm32f746g_disco", "nucleo_l4r5zi"):
        assert get_board(name).platforms == ("zephyr",) and "bare-metal" in get_board(name).notes


def test_twin_must_pair_physical_with_emulated(tmp_path):
    with pytest.raises(UserError, match="must pair a physical board with an emulated one"):
        _database(tmp_path, {"a": _raw(twin="b"), "b": _raw(twin="a")})


def test_shipped_database_parses_cleanly():
    records = board_records.load_board_records()
    assert set(check_database(records)) == set(board_names())
    # Addresses are written as hex text and read as integers.
    assert records["mps2_an385"]["memory"]["ram"]["origin"] == 0x20000000


def test_templates_resolve_a_board_with_the_standard_library_alone():
    record = board_records.resolve_board("mps2_an386", "baremetal")
    typed = get_board("mps2_an386").to_dict()
    assert record["name"] == "mps2_an386" and all(record[key] == typed[key] for key in record)
    with pytest.raises(UserError, match="board nucleo_f746zg is not a baremetal board") as info:
        board_records.resolve_board("nucleo_f746zg", "baremetal")
    assert "mps2_an386" in info.value.hint
    with pytest.raises(UserError, match="unknown board 'mps2_an368'") as info:
        board_records.resolve_board("mps2_an368", "baremetal")
    assert "mps2_an386" in info.value.hint


def _run_cli(*argv):
    parser = argparse.ArgumentParser(prog="utvm")
    boards_cli.register(parser.add_subparsers())
    args = parser.parse_args(["boards", *argv])
    out = io.StringIO()
    assert args.func(args, out=out) == 0
    return out.getvalue()


def test_cli_lists_boards_with_how_they_run():
    text = _run_cli()
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["NAME", "CPU", "RAM", "FLASH", "PLATFORMS"]
    an385 = next(line for line in lines if line.startswith("mps2_an385 "))
    assert "cortex-m3" in an385 and "4 MiB" in an385 and "qemu-system-arm -M mps2-an385" in an385
    f746 = next(line for line in lines if line.startswith("nucleo_f746zg "))
    assert "320 KiB" in f746 and "physical (openocd | pyocd)" in f746
    assert "not real-board timings" in text


def test_cli_template_filter_and_json():
    text = _run_cli("--template", "baremetal")
    assert "mps2_an500" in text and "nucleo_f746zg" not in text
    records = json.loads(_run_cli("--template", "arduino", "--json"))
    assert records and all("arduino" in r["platforms"] for r in records)
    with pytest.raises(UserError, match="no boards are recorded for template"):
        _run_cli("--template", "windows")


def test_cli_does_not_import_tvm():
    code = ("import sys, argparse, io; from utvm.cli import boards_command as cli; "
            "p = argparse.ArgumentParser(); "
            "cli.register(p.add_subparsers()); a = p.parse_args(['boards']); a.func(a, out=io.StringIO()); "
            "assert 'tvm' not in sys.modules, 'tvm was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_fit_check_passes_and_fails_with_both_numbers():
    board = board_records.resolve_board("arduino_uno")
    check_fit(board, Footprint(ram={"arena": 1000, "runtime and stack": 500}, flash={"runtime code": 8000}))
    with pytest.raises(UserError) as info:
        check_fit(board, Footprint(ram={"arena": 3000, "runtime and stack": 500},
                                   flash={"runtime code": 8000, "constant w": 40000}))
    message = str(info.value)
    assert "does not fit arduino_uno" in message
    assert "3500 bytes) of RAM, the board has 2 KiB (2048 bytes)" in message
    assert "48000 bytes) of flash, the board has 31.5 KiB (32256 bytes)" in message
    assert "largest: constant w 39.1 KiB, runtime code 7.8 KiB" in message


def test_footprint_from_metadata_names_the_largest_constants():
    metadata = {
        "memory": {"arena_bytes": 4096, "workspace_bytes": 256, "constant_bytes": 7000, "io_bytes": 100},
        "plan": {"tensors": [{"name": f"c{i}", "storage": "const", "nbytes": 1000 * i} for i in range(1, 4)]
                 + [{"name": "tiny", "storage": "const", "nbytes": 1000},
                    {"name": "x", "storage": "arena", "nbytes": 9}]},
    }
    fp = footprint_from_metadata(metadata, runtime_ram=2048, runtime_flash=6000)
    assert fp.ram == {"arena": 4096, "workspace": 256, "runtime and stack": 2048}
    assert fp.flash == {"runtime code": 6000, "constant c3": 3000, "constant c2": 2000, "constant c1": 1000,
                        "other constants": 1000}
    assert fp.flash_bytes == 13000


def test_constants_are_also_named_by_the_kernel_that_reads_them():
    # Importers often call weights const_0, const_1: the reading kernel says which layer they are.
    metadata = {
        "memory": {"arena_bytes": 64, "constant_bytes": 3000},
        "plan": {"tensors": [{"id": 0, "name": "x", "storage": "arena", "nbytes": 64},
                             {"id": 1, "name": "const_0", "storage": "const", "nbytes": 2000},
                             {"id": 2, "name": "const_1", "storage": "const", "nbytes": 1000}],
                 "kernels": [{"name": "fused_conv2d_relu", "args": [0, 1, 0]},
                             {"name": "dense", "args": [0, 2]}]},
    }
    fp = footprint_from_metadata(metadata, runtime_ram=0, runtime_flash=0)
    assert fp.flash == {"constant const_0 (read by fused_conv2d_relu)": 2000,
                        "constant const_1 (read by dense)": 1000}
