"""Project options: the schema a server declares, and validation and coercion by declared type.

The client validates before a call leaves it. Names are strict (an unknown name is an error that
lists the valid ones). Sending is lenient: every option the user gives goes to the server, as in
microTVM, plus the declared defaults of the options the method takes. The server base coerces
what arrives with the same code, so a template never sees ``verbose="yes please"``.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from .errors import UserError
from .wire import OPTION_METHODS

OPTION_TYPES = ("bool", "int", "float", "str")


@dataclasses.dataclass
class ProjectOption:
    """One project option, as reported by server_info_query.

    ``required`` and ``optional`` list the methods (``generate_project``, ``build``, ``flash``,
    ``open_transport``, or a ``utvm_`` extension) that need or accept the option.
    """

    name: str
    type: str
    choices: Optional[List[Any]] = None
    default: Any = None
    required: List[str] = dataclasses.field(default_factory=list)
    optional: List[str] = dataclasses.field(default_factory=list)
    help: str = ""

    def __post_init__(self):
        if self.type not in OPTION_TYPES:
            raise ValueError(f"option {self.name!r}: type must be one of {OPTION_TYPES}, not {self.type!r}")
        self.required = list(self.required or [])
        self.optional = list(self.optional or [])
        if self.choices is not None:
            self.choices = list(self.choices)

    @property
    def methods(self) -> List[str]:
        """The methods that take this option, required ones first."""
        return self.required + [m for m in self.optional if m not in self.required]

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> ProjectOption:
        """Read an option from a server's reply; fields a version-1 server may leave out get defaults."""
        return cls(
            name=data["name"],
            type=data.get("type") or "str",
            choices=data.get("choices"),
            default=data.get("default"),
            required=data.get("required") or [],
            optional=data.get("optional") or [],
            help=data.get("help") or "",
        )


class PreparedOptions(dict):
    """Options already validated and coerced for one method: validating them again is a no-op."""

    def __init__(self, method: str, values: Mapping[str, Any]):
        super().__init__(values)
        self.method = method

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


class OptionError(UserError):
    """An option is unknown, missing, or has a value its declared type or choices refuse."""


def _type_error(option: ProjectOption, value: Any, expected: str) -> OptionError:
    return OptionError(
        f"option {option.name}={value!r}: expected {expected}",
        hint=f"{option.name} is a {option.type} option" + (f": {option.help}" if option.help else ""),
    )


def coerce_value(option: ProjectOption, value: Any) -> Any:
    """Convert value (typically a string from `-o key=value`) to the option's declared type."""
    kind = option.type
    if kind == "bool":
        if isinstance(value, bool):
            result: Any = value
        elif isinstance(value, int) and value in (0, 1):
            result = bool(value)
        elif isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            result = value.strip().lower() in _TRUE
        else:
            raise _type_error(option, value, "true/false (also 1/0, yes/no)")
    elif kind == "int":
        if isinstance(value, bool):
            raise _type_error(option, value, "an integer")
        if isinstance(value, int):
            result = value
        elif isinstance(value, float) and value.is_integer():
            result = int(value)
        elif isinstance(value, str):
            try:
                result = int(value.strip(), 0)
            except ValueError:
                raise _type_error(option, value, "an integer") from None
        else:
            raise _type_error(option, value, "an integer")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _type_error(option, value, "a number")
        try:
            result = float(value)
        except ValueError:
            raise _type_error(option, value, "a number") from None
    else:
        if not isinstance(value, str):
            raise _type_error(option, value, "a string")
        result = value
    if option.choices is not None:
        if result not in [_coerce_choice(option, c) for c in option.choices]:
            raise OptionError(
                f"option {option.name}={value!r} is not one of its choices",
                hint=f"choose one of: {', '.join(str(c) for c in option.choices)}",
            )
    return result


def _coerce_choice(option: ProjectOption, choice: Any) -> Any:
    # A template may list choices loosely (e.g. "2" for an int); compare them as the declared type.
    try:
        return coerce_value(ProjectOption(option.name, option.type), choice)
    except OptionError:
        return choice


def _unknown_name_error(name: str, valid: Sequence[str]) -> OptionError:
    close = difflib.get_close_matches(name, valid, n=1)
    guess = f" (did you mean {close[0]}?)" if close else ""
    listing = ", ".join(sorted(valid)) if valid else "(this template declares no options)"
    return OptionError(f"unknown option {name!r}{guess}", hint=f"valid options: {listing}")


def validate_options(
    schema: Iterable[ProjectOption], method: str, given: Optional[Mapping[str, Any]]
) -> PreparedOptions:
    """Check and coerce the options given for method; return what to send to the server.

    Raises OptionError for an unknown name, a value of the wrong type, a bad choice, or a
    required option that is neither given nor defaulted. A value of None counts as not given.
    Options prepared for this method already are returned as they are.
    """
    if isinstance(given, PreparedOptions) and given.method == method:
        return given
    by_name = {o.name: o for o in schema}
    given = {k: v for k, v in (given or {}).items() if v is not None}
    for name in given:
        if name not in by_name:
            raise _unknown_name_error(name, list(by_name))
    result = {name: coerce_value(by_name[name], value) for name, value in given.items()}
    missing = [
        o for o in by_name.values() if method in o.required and o.name not in result and o.default is None
    ]
    if missing:
        names = ", ".join(o.name for o in missing)
        example = " ".join(f"-o {o.name}=..." for o in missing)
        raise OptionError(
            f"{method} needs option{'s' if len(missing) > 1 else ''} {names}",
            hint=f"give {example}" + "".join(f"; {o.name}: {o.help}" for o in missing if o.help),
        )
    for option in by_name.values():
        if option.name not in result and option.default is not None and method in option.methods:
            result[option.name] = option.default
    return PreparedOptions(method, result)


def parse_option_args(pairs: Optional[Iterable[str]]) -> Dict[str, str]:
    """Turn repeated ``-o key=value`` arguments into a dict (the last value of a key wins)."""
    result: Dict[str, str] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise OptionError(f"bad option {pair!r}: expected KEY=VALUE", hint="write it as -o name=value")
        result[name.strip()] = value
    return result


def _describe_one(option: ProjectOption, method: str) -> List[str]:
    facts = [option.type]
    if method in option.required:
        facts.append("required")
    if option.choices is not None:
        facts.append("choices: " + ", ".join(str(c) for c in option.choices))
    if option.default is not None:
        shown = '""' if option.default == "" else option.default
        facts.append(f"default: {shown}")
    lines = [f"    {option.name} ({'; '.join(facts)})"]
    if option.help:
        lines.append(f"        {option.help}")
    return lines


def describe_options(schema: Iterable[ProjectOption], first: Optional[str] = None) -> str:
    """Options grouped by the method that takes them, each with type, choices, default and help."""
    schema = list(schema)
    methods = list(OPTION_METHODS)
    for option in schema:
        methods += [m for m in option.methods if m not in methods]
    if first in methods:
        methods.remove(first)
        methods.insert(0, first)
    lines: List[str] = []
    for method in methods:
        members = [o for o in schema if method in o.methods]
        if members:
            lines.append(f"  {method}:")
            for option in members:
                lines += _describe_one(option, method)
    return "\n".join(lines) if lines else "  (no options)"
