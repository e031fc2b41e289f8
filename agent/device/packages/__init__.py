"""Signed model packages on the device: fetch, safe extraction, manifest, staging, golden check.

Verified versions then live in the model store (:mod:`agent.device.store.store`): crash-safe
``current``/``previous`` pointers, trials, rollback and recovery at start. Named crash
points (:mod:`agent.core.crash`) let tests kill the agent at any step of it.

Modules and their public names:

- ``archive``: ``write_archive``, ``read_manifest_member``
- ``backends``: ``package_backend_config``
- ``errors``: ``PackageError``, ``PackageFormatError``, ``TruncatedArchiveError``,
  ``PackageSignatureError``, ``UnsignedPackageError`` (+26)
- ``extract``: ``ExtractedFile``, ``data_filter``, ``extract_archive``,
  ``check_gzip_stream``, ``tar_stream``, ``unpacked_cap``
- ``fetch``: ``FetchResult``, ``fetch``
- ``fetch_watch``: ``FetchWatch``, ``TICK_S``
- ``gunzip``: ``BoundedGunzip``, ``CHUNK``
- ``golden``: ``run_golden_check``, ``run_child``, ``signal_name``
- ``golden_check``: ``check_package``, ``check_specs``, ``parse_backend_config``, ``main``
- ``limits``: ``PackageLimits``
- ``local_source``: ``open_local_package``, ``shown``, ``PSEUDO_ROOTS``
- ``members``: ``MemberChecks``, ``GuardedTarInfo``, ``guarded_tarinfo``, ``check_member``,
  ``check_name``, ``member_name``, ``shown``
- ``manifest``: ``FileEntry``, ``Golden``, ``ManifestBody``, ``PackageManifest``,
  ``path_problem`` (+13)
- ``manifest_json``: ``parse_manifest_json``, ``MANIFEST_NAME``, ``MAX_MANIFEST_DEPTH``,
  ``INT64_MIN``, ``INT64_MAX``
- ``staging``: ``StagedPackage``, ``stage``, ``check_files``, ``check_model_info``,
  ``check_artifact``, ``remove_stale_staging``
"""
