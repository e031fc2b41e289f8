"""Greengrass specifics of the running agent: component-update deferral while a rollout is in
progress.
"""
