"""`module:attribute` references, as the CLI and the Temporal worker take them."""

from __future__ import annotations

import importlib
from typing import Any

from ._exceptions import ConfigurationError

__all__ = ["resolve"]


def resolve(spec: str, *, what: str = "object") -> Any:
    """Import `module` and walk the dotted `attribute` path; a clear `ConfigurationError` if not."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"a {what} is given as module:attribute, got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ConfigurationError(
            f"cannot load the {what} {spec!r}: {e}. Check that the module is importable here."
        ) from None
    return obj
