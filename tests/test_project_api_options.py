"""The option schema's strictness: names, types, choices and required options, checked client-side."""

from __future__ import annotations

import pytest
from project_api_peers import copy_peer, make_mlf, read_calls
from utvm.project_api.errors import UserError
from utvm.project_api.options import (
    OptionError,
    ProjectOption,
    coerce_value,
    describe_options,
    parse_option_args,
    validate_options,
)
from utvm.project_api.project import TemplateProject

SCHEMA = [
    ProjectOption("board", "str", choices=["alpha", "beta"], required=["generate_project"], help="the board"),
    ProjectOption("jobs", "int", default=1, optional=["build"], help="parallel jobs"),
    ProjectOption("level", "int", choices=[0, 1, 2, 3], default=2, optional=["build"]),
    ProjectOption("verbose", "bool", default=False, optional=["generate_project", "build", "flash"]),
    ProjectOption("scale", "float", optional=["open_transport"]),
    ProjectOption("port", "str", required=["flash"], default="/dev/ttyACM0"),
]
BY_NAME = {o.name: o for o in SCHEMA}


@pytest.mark.parametrize("text", ["true", "True", "TRUE", "1", "yes", "Yes", " yes ", True, 1])
def test_bool_true(text):
    assert coerce_value(BY_NAME["verbose"], text) is True


@pytest.mark.parametrize("text", ["false", "False", "0", "no", "NO", False, 0])
def test_bool_false(text):
    assert coerce_value(BY_NAME["verbose"], text) is False


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("jobs", "42", 42),
        ("jobs", " -3 ", -3),
        ("jobs", "0x10", 16),
        ("jobs", 7, 7),
        ("jobs", 3.0, 3),
        ("scale", "1.5", 1.5),
        ("scale", "1e3", 1000.0),
        ("scale", 2, 2.0),
        ("board", "beta", "beta"),
        ("level", "3", 3),
    ],
)
def test_values_are_coerced_to_the_declared_type(name, value, expected):
    result = coerce_value(BY_NAME[name], value)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    "name, value, complaint",
    [
        ("verbose", "maybe", "true/false"),
        ("verbose", "", "true/false"),
        ("verbose", 2, "true/false"),
        ("jobs", "4.5", "an integer"),
        ("jobs", "many", "an integer"),
        ("jobs", True, "an integer"),
        ("jobs", 4.5, "an integer"),
        ("scale", "fast", "a number"),
        ("scale", False, "a number"),
        ("board", 5, "a string"),
    ],
)
def test_bad_values_name_the_type(name, value, complaint):
    with pytest.raises(OptionError) as error:
        coerce_value(BY_NAME[name], value)
    assert complaint in error.value.message and name in error.value.message
    assert f"is a {BY_NAME[name].type} option" in error.value.hint


@pytest.mark.parametrize(
    "name, value, choices", [("board", "gamma", "alpha, beta"), ("level", "5", "0, 1, 2, 3")]
)
def test_bad_choices_list_the_choices(name, value, choices):
    with pytest.raises(OptionError, match="not one of its choices") as error:
        coerce_value(BY_NAME[name], value)
    assert error.value.hint == f"choose one of: {choices}"


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(OptionError) as error:
        validate_options(SCHEMA, "build", {"jbos": "2"})
    assert "unknown option 'jbos'" in error.value.message
    assert "did you mean jobs?" in error.value.message
    assert error.value.hint == "valid options: board, jobs, level, port, scale, verbose"
    assert isinstance(error.value, UserError) and error.value.exit_code == 2


def test_missing_required_for_this_method():
    with pytest.raises(OptionError) as error:
        validate_options(SCHEMA, "generate_project", {"verbose": "1"})
    assert error.value.message == "generate_project needs option board"
    assert "-o board=..." in error.value.hint and "the board" in error.value.hint
    # Required elsewhere only: not needed here. A default satisfies "required" (port for flash).
    assert validate_options(SCHEMA, "build", {}) == {"jobs": 1, "level": 2, "verbose": False}
    assert validate_options(SCHEMA, "flash", {})["port"] == "/dev/ttyACM0"


def test_what_is_sent_given_values_coerced_plus_the_methods_defaults():
    sent = validate_options(SCHEMA, "generate_project", {"board": "alpha", "jobs": "8", "scale": None})
    # jobs is a build option but the user gave it: names are strict, sending is lenient.
    # scale=None counts as not given; level's default is not for generate_project.
    assert sent == {"board": "alpha", "jobs": 8, "verbose": False}


def test_parse_option_args():
    assert parse_option_args(["a=1", "b=x=y", "c=", "a=2"]) == {"a": "2", "b": "x=y", "c": ""}
    for bad in ["novalue", "=1"]:
        with pytest.raises(OptionError, match="KEY=VALUE"):
            parse_option_args([bad])


def test_describe_options_groups_by_method():
    text = describe_options(SCHEMA, first="build")
    assert text.index("  build:") < text.index("  generate_project:")
    assert "    board (str; required; choices: alpha, beta)" in text
    assert "    level (int; choices: 0, 1, 2, 3; default: 2)" in text
    assert "        parallel jobs" in text


def test_a_bad_option_never_reaches_the_server(tmp_path):
    template_dir = copy_peer("spec_server", tmp_path)
    mlf = make_mlf(tmp_path / "model.tar")
    with TemplateProject.from_directory(template_dir, echo=False) as template:
        for options in ({"nosuch": "1"}, {"board": "gamma"}, {}, {"board": "alpha", "jobs": "x"}):
            with pytest.raises(OptionError):
                template.generate_project(mlf, tmp_path / "proj", options)
            assert not (tmp_path / "proj").exists()
    assert read_calls(template_dir) == ["server_info_query"]
