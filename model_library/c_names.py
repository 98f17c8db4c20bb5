"""Names from a model made safe for C: the one place every such name passes before it is printed.

A model's names are anything its authors typed: ONNX inputs such as `gpu_0/data_0` or `0`, TFLite
tensors such as `model/conv2d;bias`, file names with dots and dashes. In C they become
identifiers (the model prefix, kernel symbols, kernel parameters, array names) or text inside
string literals (tensor and kernel names in the plan's tables). `c_identifier` maps a name to a
valid identifier (ASCII letters, digits and `_`, not starting with a digit, not a keyword, not
reserved) and, given the names already taken in the same scope, to a unique one; `c_string_text`
maps it to text that is safe between double quotes.
"""

from __future__ import annotations

import re

# C99 and C11 keywords, names a C file here may also see as macros or library functions, and the
# words kernel_codegen reads as TVM's non-finite float constants.
_RESERVED = frozenset(
    """auto break case char const continue default do double else enum extern float for goto if
    inline int long register restrict return short signed sizeof static struct switch typedef union
    unsigned void volatile while _Alignas _Alignof _Atomic _Bool _Complex _Generic _Imaginary
    _Noreturn _Static_assert _Thread_local bool true false NULL main errno assert
    inf inff nan nanf INFINITY NAN""".split()
)
_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")


def c_identifier(name: str, taken: set | None = None, prefix: str = "v_") -> str:
    """A valid C identifier made from `name`; unique among `taken` (which it is added to) if given.

    Characters outside [A-Za-z0-9_] become `_`; leading underscores go (an identifier starting with
    `_` and a capital or a second `_` is reserved); a name starting with a digit, empty, or a
    keyword gets `prefix` in front.
    """
    cleaned = _NOT_IDENTIFIER.sub("_", str(name)).lstrip("_")
    if not cleaned or cleaned[0].isdigit() or cleaned in _RESERVED:
        cleaned = prefix + cleaned
    return cleaned if taken is None else unique_name(cleaned, taken)


def unique_name(base: str, taken: set) -> str:
    """`base`, or `base_1`, `base_2`, ...: the first not in `taken`, which it is added to."""
    candidate, n = base, 1
    while candidate in taken:
        candidate = f"{base}_{n}"
        n += 1
    taken.add(candidate)
    return candidate


def c_string_text(text: str) -> str:
    """`text` with every character that could end or escape a C string literal replaced by `_`."""
    return "".join(ch if (ch.isalnum() or ch in "_.:-+ ") and ord(ch) < 128 else "_" for ch in str(text))
