"""The local inference API: applications on the device send tensors and get predictions.

Front ends turn a request into numpy arrays and call the one
:class:`~agent.device.serving.service.InferenceService`, which queues it for the
inference thread (through the variants router, like the loop's own samples).

Modules and their public names:

- ``config``: ``ServerConfig``
- ``regions``: ``shm_path``, ``Region``, ``RegionRegistry``
- ``service``: ``ServedModel``, ``InferenceResult``, ``InferenceService``
"""
