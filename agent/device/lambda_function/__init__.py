"""Internals of :mod:`agent.lambda_handler`, the Greengrass Lambda entry point.

:mod:`agent.device.lambda_function.batches` validates events and runs batches through one loaded
model; :mod:`agent.device.lambda_function.loading` reads the settings from the environment and
loads the model they name (the agent's store, a signed package, or, for
development, an unsigned model directory).
"""
