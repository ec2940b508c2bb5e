"""Processing blocks between a user's files and a model batch (no Hydra, no Lightning)."""
