"""What a device reports about itself: per-variant metrics, health, and their EMF form."""
