"""Evaluation: kNN monitor (linear probe and fine-tuning to come)."""
