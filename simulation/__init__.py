"""The synthetic app-store world (ground-truth probabilities) and the online A/B simulation."""
