"""The running agent: configuration, composition root, scheduler, commands and swaps.

Modules and their public names:

- ``api``: ``Listener``, ``LocalApi``
- ``commands``: ``Result``, ``CommandProcessor``
- ``config``: ``AgentConfig``, ``load_config``, ``read_config_file``
- ``config_reload``: ``ConfigReloader``
- ``first_model``: ``Candidate``, ``choose_package``, ``offered_version``,
  ``install_first_model``
- ``inference``: ``InferenceWorker``
- ``parts``: ``AgentParts``, ``build_parts``
- ``reports``: ``Reports``
- ``scheduler``: ``Scheduler``
- ``service``: ``AgentService``
- ``startup``: ``model_version``, ``device_root``, ``device_profile``, ``open_store``,
  ``initial_model`` (+2)
- ``swaps``: ``InsufficientMemoryError``, ``Rollout``, ``SwapController``
"""
