"""How a device's messages leave it: durable spool, drainer, outbox, Greengrass IPC.

Modules and their public names:

- ``drain``: ``DrainStats``, ``SpoolDrainer``
- ``ipc``: ``IpcConnection``, ``IpcTransport``, ``ipc_available``, ``guarded``
- ``outbox``: ``Outbox``
- ``spool``: ``Priority``, ``Spool``, ``SpoolConfig``, ``SpoolEntry``, ``SpoolError`` (+2)
- ``spool_disk``: ``disk_limit``, ``disk_bytes``, ``configure``, ``shrink_wal``,
  ``vacuum_if_sparse`` (+6)
- ``spool_types``: ``SpoolError``, ``SpoolFullError``, ``Priority``, ``SpoolConfig``,
  ``SpoolEntry`` (+1)
"""
