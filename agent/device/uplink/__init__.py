"""How the device's messages leave it: the durable spool, its drainer, the outbox and the
Greengrass IPC transport.
"""
