"""SimSiam self-supervised pretraining in JAX/Flax."""
