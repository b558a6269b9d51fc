"""The run: Agent, its loop, the step rules, the journal. See docs/architecture.md."""
