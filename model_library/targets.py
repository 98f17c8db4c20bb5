"""Target specifications: what the user writes, turned into the dict TVM 0.27 accepts.

TVM 0.27 no longer parses target strings with options ("c -mcpu=cortex-m4"), so utvm does it:
- `None` or `"c"`: plain C;
- a dict, or its JSON text: `{"kind": "c", "mcpu": "cortex-m4"}`;
- `"c -mcpu=cortex-m4 -march=armv7e-m"`: options after the kind, as `-key=value`;
- a CPU shorthand such as `"cortex-m4"`: the C target with that `mcpu`.
Only the C code generator is supported, because the archive ships C sources.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Union

from .errors import TargetError

TargetSpec = Union[None, str, Mapping[str, Any]]

_INT_OPTIONS = ("workspace-byte-alignment", "constants-byte-alignment")
_CPU_SHORTHAND = re.compile(r"^(cortex-[amr]\d+\w*|[a-z][\w.+-]*-cpu)$")


def parse_target(spec: TargetSpec) -> dict:
    """Return the target as a canonical dict (`kind` is always "c"); raise TargetError if invalid."""
    if spec is None:
        return {"kind": "c"}
    if isinstance(spec, Mapping):
        target = dict(spec)
    elif isinstance(spec, str):
        target = _parse_string(spec.strip())
    else:
        raise TargetError(f"target must be a string or a dict, not {type(spec).__name__}")
    target.setdefault("kind", "c")
    if target["kind"] != "c":
        raise TargetError(
            f"target kind {target['kind']!r} is not supported",
            hint='model_library generates C sources; use kind "c" with -mcpu/-march for the CPU',
        )
    for key in _INT_OPTIONS:
        if key in target:
            try:
                target[key] = int(target[key])
            except (TypeError, ValueError):
                raise TargetError(f"target option {key} must be an integer, not {target[key]!r}") from None
    return {key: target[key] for key in sorted(target)}


def is_generic_target(target: dict) -> bool:
    """True for the C target with no CPU, triple or architecture named: the host template's,
    built by the host's own compiler for the machine it runs on."""
    return target.get("kind", "c") == "c" and not any(target.get(key) for key in ("mcpu", "mtriple", "march"))


def _parse_string(text: str) -> dict:
    if not text:
        return {"kind": "c"}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise TargetError(f"target JSON does not parse: {err}") from None
        if not isinstance(value, dict):
            raise TargetError('target JSON must be an object such as {"kind": "c"}')
        return value
    if _CPU_SHORTHAND.match(text):
        return {"kind": "c", "mcpu": text}
    words = text.split()
    target: dict = {"kind": words[0]}
    for word in words[1:]:
        match = re.fullmatch(r"--?([A-Za-z][\w-]*)=(.+)", word)
        if match is None:
            raise TargetError(
                f"cannot read target option {word!r} in {text!r}",
                hint='write options as -key=value, e.g. "c -mcpu=cortex-m4", or pass a JSON dict',
            )
        target[match.group(1)] = match.group(2)
    return target


def target_string(target: Mapping[str, Any]) -> str:
    """The short text form of a canonical target dict, e.g. "c -mcpu=cortex-m4"."""
    options = " ".join(f"-{key}={target[key]}" for key in sorted(target) if key != "kind")
    return f"{target['kind']} {options}".strip()


def tvm_target(target: Mapping[str, Any]):
    """Build TVM's Target object, turning TVM's complaint about an option into a TargetError."""
    import tvm

    try:
        return tvm.target.Target(dict(target))
    except Exception as err:  # TVM raises ValueError/TVMError with the list of known options
        raise TargetError(f"TVM rejects target {target_string(target)!r}: {err}") from None
