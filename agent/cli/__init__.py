"""``edge-agent`` (``python -m agent.cli``): one module per command group and the options they
share.
"""
