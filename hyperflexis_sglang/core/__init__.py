"""Pure policy core: no I/O, no clocks, no randomness (all passed in)."""
