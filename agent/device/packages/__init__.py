"""Model swaps: signed packages, fetching, safe extraction and staging before anything serves.

Verified versions then live in the model store (:mod:`agent.device.store.store`): crash-safe
``current``/``previous`` pointers, trials, rollback and recovery at start. Named crash
points (:mod:`agent.core.crash`) let tests kill the agent at any step of it.
"""
