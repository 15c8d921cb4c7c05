"""Training utilities: the AdderNet optimizer (and later state, steps, checkpoints, loop)."""
