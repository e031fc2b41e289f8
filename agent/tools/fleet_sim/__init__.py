"""A simulated fleet: in-process devices speaking the real wire protocol, for scale tests.

Modules and their public names:

- ``answers``: ``answer``
- ``device``: ``SimDevice``
- ``fleet``: ``SimulatedFleet``
- ``lanes``: ``SimContext``, ``Lane``, ``new_lane``, ``carried_lane``
- ``model``: ``FleetStats``, ``BreachReport``, ``DeviceView``, ``SimulationError``,
  ``ModelBehaviour`` (+6)
- ``rollout``: ``ScenarioOptions``, ``run_scenario``, ``simulate_rollout_main``
- ``simulate``: ``BreachReport``, ``BreachSpec``, ``DeviceView``, ``FleetHook``,
  ``FleetStats`` (+10)
"""
