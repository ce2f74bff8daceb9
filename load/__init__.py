"""Load tests, the comparison runner and the benchmarks (see README)."""
