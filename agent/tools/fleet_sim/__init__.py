"""A simulated fleet: in-process devices that speak the real wire protocol, for scale tests of the
controller.
"""
