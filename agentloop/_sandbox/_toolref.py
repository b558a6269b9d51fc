"""`tool_ref`: the "module:qualname" a fork server imports a sandboxed tool by, checked at
registration so that nothing about the reference can fail in the middle of a run."""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any

from .._exceptions import ToolDefinitionError

__all__ = ["tool_ref"]


def tool_ref(fn: Callable[..., Any]) -> str:
    """ "module:qualname" of `fn`, checked to be importable by that path in a fresh process."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    name = getattr(fn, "__name__", repr(fn))
    move = f"; define {name!r} at the top level of an importable module to run it sandboxed"
    if not module or not qualname:
        raise ToolDefinitionError(_unsendable(fn) or f"{fn!r} has no module or qualified name{move}")
    if module == "__main__":
        raise ToolDefinitionError(f"{name!r} is defined in __main__, which a fork server cannot import{move}")
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise ToolDefinitionError(f"{name!r} is a lambda or a nested function ({qualname}){move}")
    mod = sys.modules.get(module)
    if mod is None:
        try:
            mod = importlib.import_module(module)
        except Exception as exc:
            raise ToolDefinitionError(
                f"module {module!r} of {name!r} cannot be imported: {exc}{move}"
            ) from None
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            # Decorators run before the module attribute is assigned: accept a module that is
            # still importing; the fork server reports a clear error if it is really missing.
            if getattr(getattr(mod, "__spec__", None), "_initializing", False):
                return f"{module}:{qualname}"
            raise ToolDefinitionError(f"{module}:{qualname} does not resolve to {name!r}{move}")
    while obj is not fn and hasattr(obj, "__wrapped__"):
        obj = obj.__wrapped__
    if obj is not fn and not (inspect.ismethod(fn) and obj == fn):  # a classmethod: bound anew per access
        raise ToolDefinitionError(
            _unsendable(fn) or f"{module}:{qualname} names another object, not {name!r}{move}"
        )
    return f"{module}:{qualname}"


def _unsendable(fn: Any) -> str | None:
    """Why `fn` is an object a fork server cannot import by name (None if it may be): it imports a
    module attribute, so a partial's bound arguments, a method's instance or a callable object's
    state would be lost. Said here, by kind, rather than as "names another object"."""
    fix = "and register that function (a module in sys.path: not __main__) to run it sandboxed"
    if isinstance(fn, functools.partial):
        return (
            f"a functools.partial of {getattr(fn.func, '__qualname__', fn.func)!r} cannot be sent to a "
            f"fork server by module name with its bound arguments; write a top-level function that calls "
            f"it with those arguments {fix}"
        )
    if inspect.ismethod(fn) and not isinstance(fn.__self__, type):
        return (
            f"{fn.__qualname__!r} is a method bound to a {type(fn.__self__).__name__} instance, which "
            f"a fork server cannot import by module name; write a top-level function (or a "
            f"staticmethod) that does the call {fix}"
        )
    if not inspect.isroutine(fn) and not isinstance(fn, type) and callable(fn):
        return (
            f"a callable {type(fn).__name__} instance cannot be sent to a fork server by module name "
            f"with its state; write a top-level function that calls it {fix}"
        )
    return None
