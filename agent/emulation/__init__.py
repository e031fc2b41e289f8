"""Emulated devices: board file-system trees a laptop uses to stand in for real devices."""
