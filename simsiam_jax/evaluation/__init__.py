"""Evaluation of a backbone's features.

  knn.py       sharded weighted kNN (the bank stays sharded on the mesh)
  monitor.py   features of the train/test splits, the kNN monitor, baselines
               (raw pixels, random init) and their on-disk cache
  probe.py     fast linear probe on frozen features (L-BFGS, L2 by holdout)
  collapse.py  the collapse watch on the output std

The official augmented linear probe and fine-tuning train a network and
live in classify.py.
"""
