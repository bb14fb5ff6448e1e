"""Benchmarks (not tests): ``bench/run`` measures and prints one table, each row side by side in one run."""
