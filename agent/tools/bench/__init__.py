"""Benchmarks: the inference loop, model swaps, the telemetry path, as ratios in one run.

Modules and their public names:

- ``alloc``: ``bytes_per_call``
- ``loop``: ``VerificationError``, ``Workload``, ``opt_out_of_dlr_phone_home``,
  ``build_loops``, ``measure_rss`` (+2)
- ``report``: ``emit``
- ``rss``: ``peak_rss_kb``, ``main``
- ``swap``: ``StampedSource``, ``run_bench``, ``bench_swap_main``
- ``telemetry``: ``metrics_overhead``, ``run_bench``, ``bench_telemetry_main``
- ``telemetry_path``: ``BrokerAddress``, ``spool_throughput``
"""
