"""The inference path: loop, lanes, sources, pacing, shared memory, plans, router.

Modules and their public names:

- ``guardrails``: ``Guardrails``, ``Breach``, ``evaluate``
- ``lane``: ``LoopStats``, ``Lane``
- ``pacing``: ``Pacer``
- ``plans``: ``Plan``, ``ShadowStats``, ``serve``, ``shadow``, ``weighted``
- ``router``: ``VariantError``, ``Role``, ``LaneReport``, ``RouterSnapshot``,
  ``VariantRouter``
- ``runner``: ``InferenceLoop``, ``Lane``, ``LoopStats``
- ``shm``: ``ShmRing``, ``ShmSource``
- ``shm_producer``: ``main``
- ``sources``: ``Source``, ``ReplaySource``, ``RandomSource``, ``load_testset``,
  ``make_source_factory``
"""
