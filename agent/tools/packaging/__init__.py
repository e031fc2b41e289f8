"""Producer side of model packages: building, signing, golden vectors, signing keys.

Modules and their public names:

- ``build``: ``build_package``, ``build_onnx_package``, ``build_packages``,
  ``package_file_name``, ``package_version``, ``packaged_info``
- ``golden``: ``package_golden``, ``read_golden``, ``compute_golden``, ``check_onnx_export``,
  ``testset_inputs``
- ``keys``: ``KeyFiles``, ``keys_generate``
"""
