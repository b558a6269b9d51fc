"""`module:attribute` references, as the CLI and the Temporal worker take them."""

from __future__ import annotations

import importlib
from typing import Any

from ._exceptions import ConfigurationError

__all__ = ["import_ref", "resolve"]


def import_ref(spec: str, *, what: str = "object") -> Any:
    """The object a `"module:attribute"` reference names (`"myapp.tools:registry"`, `"pkg.mod:Cls.attr"`).

    Imports `module` and walks the dotted `attribute` path, as the command line and the Temporal
    worker take tools and registries. A reference that does not resolve raises
    `ConfigurationError` naming it (`what` says what it was meant to be, for the message).
    """
    if not isinstance(spec, str):
        raise ConfigurationError(f"a {what} is given as a 'module:attribute' str, got {type(spec).__name__}")
    module_name, _, attr = spec.partition(":")
    if module_name.startswith("."):  # importlib needs a package to resolve it against: there is none
        raise ConfigurationError(f"a {what} reference needs an absolute module name, got {spec!r}")
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
    except Exception as e:  # the module's own code failed (a SyntaxError, a raise at import time)
        where = f" ({e.filename}, line {e.lineno})" if isinstance(e, SyntaxError) else ""
        raise ConfigurationError(
            f"cannot load the {what} {spec!r}: importing {module_name!r} raised {type(e).__name__}: "
            f"{e}{where}. Fix the module; `python -c 'import {module_name}'` shows the traceback."
        ) from e
    return obj


resolve = import_ref  # the name the core's command line uses
