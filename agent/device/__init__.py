"""Everything that runs on a device: platform, runtimes, inference, packages, store, uplink,
telemetry, the agent itself.
"""
