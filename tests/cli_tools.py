"""Tools loaded by name in the CLI tests (`--tool cli_tools:shout`)."""


def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()
