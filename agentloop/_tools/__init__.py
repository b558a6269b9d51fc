"""Tools: the registry, argument checking and validation, dispatch of one step's calls."""
