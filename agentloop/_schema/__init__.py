"""Python types and functions -> JSON schemas, and the binder from validated JSON arguments back.

- `function.py`: `function_schema(fn)`, a tool's definition and its argument binder.
- `build.py`: one type -> (JSON schema, converter); also used for `Agent(output_type=...)`.
- `parts.py`: the leaves (scalars, enums, pydantic models, defaults, converters).
- `hints.py`: docstrings and type annotations, read from the tool's source.

The sandbox's child imports `agentloop._schema.function_schema` to bind arguments as the host did.
"""

from __future__ import annotations

from .build import build
from .function import FunctionSchema, function_schema
from .parts import Unsupported

__all__ = ["FunctionSchema", "Unsupported", "build", "function_schema"]
