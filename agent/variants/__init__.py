"""Blue/green variants inside one agent: shadow tests, weighted splits, promote and rollback."""
