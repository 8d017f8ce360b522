#!/usr/bin/env bash
# Creates the TPU VM pod slice; does nothing if it already exists.
source "$(dirname "$0")/env.sh"
if [[ "${DRY_RUN:-0}" != "1" ]] && "${GCLOUD[@]}" describe "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" >/dev/null 2>&1; then
  echo "$TPU_NAME exists in $ZONE: nothing to do."
  exit 0
fi
flags=()
if [[ "$PREEMPTIBLE" == "1" ]]; then flags+=(--preemptible); fi
run "${GCLOUD[@]}" create "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" \
  --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${flags[@]}"
