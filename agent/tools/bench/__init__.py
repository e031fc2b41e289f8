"""Benchmarks: the inference loop, model swaps and the telemetry path, reported as ratios measured
in one run.
"""
