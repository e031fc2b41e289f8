"""Producer side of model packages: building and signing packages, signing keys."""
