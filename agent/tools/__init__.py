"""Host and cloud tooling, never needed on a device: packaging, Greengrass components and recipe
checks, the emulated nucleus and boards, the fleet simulator, demos, benchmarks, brokers.
"""
