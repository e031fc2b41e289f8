"""The inference path: the loop and the lanes it runs, its sources and pacing, shared
memory, the per-inference plans (serve, shadow, weighted), the blue/green router and local
guardrails.
"""
