"""The emulated-fleet and telemetry demos (``edge-agent demo ...``).

Modules and their public names:

- ``fleet_demo``: ``DemoResult``, ``rollout_packages``, ``run_demo``, ``summary_table``
- ``fleet_devices``: ``EmulatedDevice``
- ``fleet_options``: ``DemoDevice``, ``DemoOptions``, ``rollout_specs``
- ``fleet_rollouts``: ``DemoTimeoutError``, ``RolloutOutcome``, ``Narrator``,
  ``describe_strategy``, ``drive`` (+1)
- ``fleet_setup``: ``Broker``, ``open_broker``, ``build_components``
- ``telemetry_demo``: ``run_demo``, ``demo_telemetry_main``
"""
