"""The search page served at `/` by `lookalike serve`."""
