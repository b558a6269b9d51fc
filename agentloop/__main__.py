"""`python -m agentloop ...`: the same as the `agentloop` command."""

from .cli import main

raise SystemExit(main())
