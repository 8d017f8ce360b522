#!/usr/bin/env bash
# One machine, all its GPUs, one process: jit shards the batch over every GPU.
source "$(dirname "$0")/../common.sh"
cd "$(dirname "$0")/../.."
CONFIG="${CONFIG:-configs/imagenet.py:gpu8}"
WORKDIR="${WORKDIR:-workdirs/imagenet_gpu8}"
EXTRA_FLAGS="${EXTRA_FLAGS:-}"
run make install
run .venv/bin/pip install -q -U "jax[cuda12]"
# XLA flags for NVIDIA GPUs: latency-hiding scheduler overlaps the gradient
# all-reduce with the backward pass.
run env XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true ${XLA_FLAGS:-}" \
  .venv/bin/python -m simsiam_jax.main --config="$CONFIG" --workdir="$WORKDIR" $EXTRA_FLAGS
