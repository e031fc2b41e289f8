"""How a device's messages leave it: durable spool, drainer, outbox, Greengrass IPC.

Modules and their public names:

- ``drain``: ``DrainStats``, ``SpoolDrainer``
- ``ipc``: ``IpcConnection``, ``IpcTransport``, ``ipc_available``, ``guarded``
- ``outbox``: ``Outbox``
- ``spool``: ``Priority``, ``Spool``, ``SpoolConfig``, ``SpoolEntry``, ``SpoolError`` (+2)
- ``spool_types``: ``SpoolError``, ``SpoolFullError``, ``Priority``, ``SpoolConfig``,
  ``SpoolEntry`` (+1)
"""
