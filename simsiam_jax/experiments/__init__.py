"""Experiments made of several runs of `simsiam_jax.main` (ablations.py)."""
