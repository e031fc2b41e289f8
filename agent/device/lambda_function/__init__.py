"""The Greengrass Lambda entry point's internals: event checks, batches, model loading.

:mod:`agent.device.lambda_function.batches` validates events and runs batches through one loaded
model; :mod:`agent.device.lambda_function.loading` reads the settings from the environment and
loads the model they name (the agent's store, a signed package, or, for
development, an unsigned model directory).

Modules and their public names:

- ``batches``: ``EventError``, ``TooManyRowsError``, ``Request``, ``InferenceCore``,
  ``parse_event``
- ``handler``: ``handler``, ``current_core``, ``warm``
- ``loading``: ``LambdaSettings``, ``LoadedModel``, ``load_model``, ``pointer_stamp``,
  ``current_version``
"""
