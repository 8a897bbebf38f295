"""Neural-network building blocks (modules, functional ops, initialisation)."""
