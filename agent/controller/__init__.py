"""The fleet controller's core (cloud side; it never runs on a device).

Pure logic and durable state, no transport: :mod:`.spec` (rollout specs),
:mod:`.registry` (devices and groups), :mod:`.plan` (deterministic cohorts and
per-device commands), :mod:`.guardrails` (fleet verdicts from merged
histograms), :mod:`.state` (SQLite state a restarted controller resumes from).
"""
