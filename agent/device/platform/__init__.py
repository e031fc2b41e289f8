"""What this device is: boards, profile, ELF checks, Neo targets, and which artifact of a model it
runs.
"""
