"""AWS Lambda entry point ``agent.lambda_handler.handler``, as the Lambda recipes name it.

The handler lives in :mod:`agent.device.lambda_function.handler`; this module keeps the
published handler path stable.
"""

from agent.device.lambda_function.handler import handler

__all__ = ["handler"]
