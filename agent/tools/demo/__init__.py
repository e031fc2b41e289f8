"""The emulated-fleet, capture-retrain-rollout loop and telemetry demos
(``edge-agent demo ...``).

Modules and their public names:

- ``fleet_demo``: ``DemoResult``, ``rollout_packages``, ``run_demo``, ``summary_table``
- ``fleet_devices``: ``EmulatedDevice``
- ``fleet_options``: ``DemoDevice``, ``DemoOptions``, ``rollout_specs``
- ``fleet_rollouts``: ``DemoTimeoutError``, ``RolloutOutcome``, ``Narrator``,
  ``describe_strategy``, ``drive`` (+1)
- ``fleet_setup``: ``Broker``, ``open_broker``, ``build_components``
- ``loop_data``: ``LoopData``, ``load_loop_data``, ``shift_right``, ``tensor_key``
- ``loop_dataset``: ``build_dataset``, ``retrain``
- ``loop_demo``: ``LoopResult``, ``run_loop_demo``, ``loop_verdict``
- ``loop_devices``: ``FieldDevice``, ``FieldWatch``, ``device_config``, ``field_devices``,
  ``check_stopped``, ``child_pids``
- ``loop_model``: ``TrainedModel``, ``train_v3``, ``build_v3_dir``, ``accuracy``,
  ``testset_arrays``
- ``loop_options``: ``LoopOptions``, ``capture_block``, ``rollout_spec``
- ``loop_report``: ``Accuracies``, ``LoopFigures``, ``accuracy_table``, ``write_png``,
  ``write_summary`` (+2)
- ``telemetry_demo``: ``run_demo``, ``demo_telemetry_main``
"""
