"""The inference path: the loop, its sources and pacing, shared memory, blue/green plans, the
router and local guardrails.
"""
