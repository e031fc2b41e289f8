"""What the agent knows about the machine it runs on (architecture, board, Neo target)."""
