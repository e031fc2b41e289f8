"""Benchmarks. Every figure is a ratio of loops interleaved in one run, never a timed test."""
