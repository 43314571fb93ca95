"""Use cases and long-running loops, written against ports only."""
