"""Greengrass specifics of the running agent: component config, state, update deferral.

Modules and their public names:

- ``component``: ``ComponentUpdateEvent``, ``GreengrassComponent``
- ``updates``: ``UpdatePolicy``
"""
