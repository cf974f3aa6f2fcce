"""Benchmarks: speed, memory and cost, each next to a baseline measured in the same run."""
