"""Model swaps: signed packages, fetching, safe extraction and staging before anything serves.

Verified versions then live in the model store (:mod:`agent.swap.store`): crash-safe
``current``/``previous`` pointers, trials, rollback and recovery at start. Named crash
points (:mod:`agent.swap.crash`) let tests kill the agent at any step of it.
"""
