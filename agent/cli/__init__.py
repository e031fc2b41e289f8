"""``edge-agent`` (``python -m agent.cli``): one module per command group, shared options.

Modules and their public names:

- ``capture``: ``add_capture_arguments``, ``cmd_capture_pull``, ``cmd_capture_list``,
  ``cmd_capture_label``, ``cmd_capture_export``
- ``demo``: ``add_fleet_demo_arguments``, ``cmd_demo_fleet``
- ``extras``: ``command_words``, ``extra_of_module``, ``needs_extra_message``,
  ``require_extras``, ``missing_extra``
- ``fleet``: ``add_fleet_arguments``
- ``main``: ``cmd_device``, ``cmd_run``, ``cmd_predict``, ``cmd_serve``,
  ``cmd_bench_telemetry`` (+8)
- ``models``: ``add_models_arguments``, ``cmd_models_build``, ``cmd_models_import``
- ``options``: ``add_mqtt_tls_arguments``, ``add_signing_arguments``, ``signer_from_args``,
  ``trusted_keys_from_args``
- ``predict``: ``add_predict_arguments``, ``predict_from_args``, ``predict``,
  ``LoadedModel``, ``is_package``
- ``package``: ``add_package_arguments``, ``keys_generate_main``, ``package_model_main``,
  ``package_component_main``
- ``rollout``: ``add_rollout_arguments``
- ``run``: ``backend_config``, ``run_from_args``, ``add_frame_source_arguments``
- ``serve``: ``add_serve_arguments``, ``config_from_args``, ``choose_transport``,
  ``resolve_board``, ``start_embedded_broker`` (+1)
"""
