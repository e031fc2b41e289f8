"""The running agent: configuration, composition root, scheduler, commands and swaps.

Modules and their public names:

- ``api``: ``Listener``, ``LocalApi``
- ``capture_parts``: ``Online``, ``CaptureParts``, ``build_capture``
- ``command_limits``: ``CommandLimits``
- ``commands``: ``Result``, ``CommandProcessor``
- ``config``: ``AgentConfig``, ``load_config``, ``read_config_file``
- ``config_reload``: ``ConfigReloader``
- ``first_model``: ``Candidate``, ``choose_package``, ``offered_version``,
  ``install_first_model``
- ``inference``: ``InferenceWorker``
- ``parts``: ``AgentParts``, ``build_parts``
- ``rate_limit``: ``TokenBucket``, ``ReportLimiter``
- ``reports``: ``Reports``
- ``scheduler``: ``Scheduler``
- ``service``: ``AgentService``
- ``stage_control``: ``package_dirs``, ``supersedes``, ``RunningStage``, ``INBOX``
- ``startup``: ``model_version``, ``device_root``, ``device_profile``, ``open_store``,
  ``initial_model`` (+2)
- ``state_dir``: ``LOG_EVERY_S``, ``RETRY_S``, ``state_dir_problem``, ``wait_until_writable``
- ``swaps``: ``InsufficientMemoryError``, ``Rollout``, ``SwapController``
"""
