"""The benchmark: load generator, sinks, hand-written baseline bridge and orchestrators.

Run from the repository root: `python -m bench.run` (see bench/README.md).
"""
