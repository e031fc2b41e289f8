"""The running agent: its configuration, composition root, command processor and model swaps."""
