"""Signed model packages on the device: fetch, safe extraction, manifest, staging, golden check.

Verified versions then live in the model store (:mod:`agent.device.store.store`): crash-safe
``current``/``previous`` pointers, trials, rollback and recovery at start. Named crash
points (:mod:`agent.core.crash`) let tests kill the agent at any step of it.

Modules and their public names:

- ``archive``: ``write_archive``, ``read_manifest_member``
- ``backends``: ``package_backend_config``
- ``errors``: ``PackageError``, ``PackageFormatError``, ``TruncatedArchiveError``,
  ``PackageSignatureError``, ``UnsignedPackageError`` (+20)
- ``extract``: ``ExtractedFile``, ``data_filter``, ``extract_archive``,
  ``check_gzip_stream``
- ``fetch``: ``FetchResult``, ``fetch``
- ``golden``: ``run_golden_check``, ``run_child``, ``signal_name``
- ``golden_check``: ``check_package``, ``parse_backend_config``, ``main``
- ``limits``: ``PackageLimits``
- ``manifest``: ``FileEntry``, ``Golden``, ``ManifestBody``, ``PackageManifest``,
  ``path_problem`` (+13)
- ``staging``: ``StagedPackage``, ``stage``, ``check_files``, ``check_model_info``,
  ``check_artifact``, ``remove_stale_staging``
"""
