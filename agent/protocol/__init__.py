"""The device <-> cloud protocol: topics, versioned message schemas, command signatures."""
