#!/usr/bin/env bash
# Deletes the TPU VM; does nothing if it is already gone. Checkpoints in
# WORKDIR (a gs:// bucket) stay.
source "$(dirname "$0")/env.sh"
if [[ "${DRY_RUN:-0}" != "1" ]] && ! "${GCLOUD[@]}" describe "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" >/dev/null 2>&1; then
  echo "$TPU_NAME does not exist in $ZONE: nothing to do."
  exit 0
fi
run "${GCLOUD[@]}" delete "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --quiet
