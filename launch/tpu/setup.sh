#!/usr/bin/env bash
# Installs the repository and jax[tpu] on every worker (safe to repeat).
source "$(dirname "$0")/env.sh"
remote="set -e
if [ -d simsiam_jax/.git ]; then git -C simsiam_jax fetch -q origin && git -C simsiam_jax checkout -q $REPO_REF && git -C simsiam_jax pull -q --ff-only || true;
else git clone -q $REPO_URL simsiam_jax && git -C simsiam_jax checkout -q $REPO_REF; fi
cd simsiam_jax && make install && .venv/bin/pip install -q -U 'jax[tpu]'"
run "${GCLOUD[@]}" ssh "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=all --command="$remote"
