"""The model store: verified versions, crash-safe current/previous pointers, trials, rollback and
recovery.
"""
