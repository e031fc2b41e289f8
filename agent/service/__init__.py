"""The long-running agent: inference, telemetry, commands, spool and transport together."""
