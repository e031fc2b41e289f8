"""The emulated-fleet and telemetry demos."""
