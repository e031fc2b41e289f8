"""What this device is: board, profile, ELF checks, Neo targets, which artifact it runs.

Modules and their public names:

- ``boards``: ``Board``, ``supported_arches``, ``generic_target``, ``is_jetson``,
  ``is_raspberry_pi`` (+4)
- ``elf``: ``normalize_arch``, ``host_arch``, ``elf_arch``, ``check_elf_arch``,
  ``exported_symbols``
- ``profile``: ``DeviceProfile``, ``detect_profile``, ``emulated_profile``,
  ``process_arch``, ``check_arch`` (+2)
- ``resolve``: ``ResolvedModel``, ``model_file``, ``resolve_model``
- ``selection``: ``acceptable_targets``, ``select_artifact``, ``verify_artifact``
- ``targets``: ``NeoTarget``, ``ParsedTarget``, ``parse_target``, ``known_target_names``
"""
