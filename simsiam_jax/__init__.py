"""SimSiam self-supervised pretraining in JAX/Flax.

config -> data source (data/sources.py) -> train step (train.py, classify.py)
-> loop (loop.py) -> checkpoints (checkpointing.py) and evaluation
(evaluation/). The train state lives in state.py, the workdir's files in
workdir.py; main.py is the command line. The README's Layout section lists
every module.
"""
