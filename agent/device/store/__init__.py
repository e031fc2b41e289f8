"""The model store: verified versions, crash-safe pointers, trials, rollback, recovery.

Modules and their public names:

- ``durable``: ``switch_pointer``, ``discard_tree``
- ``errors``: ``StoreError``, ``StoreLockedError``, ``StoreCorruptError``, ``StoreIOError``,
  ``InvalidVersionIdError`` (+5)
- ``layout``: ``StoreLayout``
- ``records``: ``Trial``, ``Rollback``, ``version_id_of``, ``check_version_id``,
  ``is_rollout_id`` (+9)
- ``recovery``: ``RecoveryReport``, ``StoreRecovery``
- ``store``: ``MANIFEST``, ``PACKAGE``, ``TRASH_PREFIX``, ``VERIFIED``,
  ``InvalidVersionIdError`` (+14)
- ``stored_package``: ``PackageArtifact``, ``package_artifact``, ``verify_package_files``
"""
