#!/usr/bin/env bash
# Starts the same training command on every worker; JAX finds its peers
# (SIMSIAM_DISTRIBUTED=1). Rerunning resumes from the latest checkpoint.
source "$(dirname "$0")/env.sh"
require WORKDIR
remote="cd simsiam_jax && SIMSIAM_DISTRIBUTED=1 .venv/bin/python -m simsiam_jax.main --config=$CONFIG --workdir=$WORKDIR $EXTRA_FLAGS"
run "${GCLOUD[@]}" ssh "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=all --command="$remote"
