"""Transports to the cloud (Greengrass IPC, direct MQTT, in-memory) and the durable spool."""
