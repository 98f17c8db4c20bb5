"""Package attributes imported on first use (PEP 562), so importing a utvm package stays cheap.

    __getattr__ = lazy_exports(__name__, {"Session": ("executor", "Session")}, globals())
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable, Dict, Mapping, Tuple


def lazy_exports(package: str, table: Mapping[str, Tuple[str, str]],
                 namespace: Dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``table`` maps each exported name to (submodule,
    attribute); the first use imports it and stores it in ``namespace`` (the package's globals)."""

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = table[name]
        value = getattr(import_module(f".{module}", package), attribute)
        namespace[name] = value
        return value

    return __getattr__
