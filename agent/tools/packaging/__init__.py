"""Producer side of model packages: building, signing, golden vectors, signing keys.

Modules and their public names:

- ``build``: ``build_package``, ``build_packages``, ``package_file_name``
- ``golden``: ``compute_golden``
- ``keys``: ``KeyFiles``, ``keys_generate``
"""
