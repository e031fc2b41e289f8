"""Benchmarks: the inference loop, model swaps, the telemetry path and the local inference
API, as ratios in one run.

Modules and their public names:

- ``alloc``: ``bytes_per_call``
- ``api``: ``Sample``, ``Child``, ``start_child``, ``measure``, ``alloc_per_request`` (+7)
- ``api_cases``: ``load_case``, ``inproc_loop``, ``stream_overhead``
- ``api_paths``: ``ApiPath``, ``Case``, ``HttpShmPath``, ``HttpJsonPath``, ``HttpEchoPath``
  (+2)
- ``api_report``: ``summarise``, ``markdown_table``
- ``capture``: ``measure_loop``, ``run_bench``, ``bench_capture_main``
- ``capture_store``: ``measure_store``
- ``api_server``: ``Served``, ``serve_model``, ``echo_app``, ``echo_frame``,
  ``start_echo_servers`` (+3)
- ``flood``: ``device_flood``, ``controller_ingest``, ``run_bench``, ``bench_flood_main``
- ``flood_ingest``: ``measure_ingest``, ``local_broker``, ``flood_payloads``, ``FLOODER``
- ``flood_sender``: ``hostile_payloads``, ``FloodSender``
- ``loop``: ``VerificationError``, ``Workload``, ``opt_out_of_dlr_phone_home``,
  ``build_loops``, ``measure_rss`` (+2)
- ``report``: ``emit``
- ``rss``: ``peak_rss_kb``, ``main``
- ``swap``: ``StampedSource``, ``run_bench``, ``bench_swap_main``
- ``telemetry``: ``metrics_overhead``, ``run_bench``, ``bench_telemetry_main``
- ``telemetry_path``: ``BrokerAddress``, ``spool_throughput``
"""
