# Cloud TPU VM pod settings; override any of them in the environment.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
TPU_NAME="${TPU_NAME:-simsiam-v4-32}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
PROJECT="${PROJECT:-}"
REPO_URL="${REPO_URL:-https://github.com/simsiam-jax/simsiam_jax.git}"
REPO_REF="${REPO_REF:-main}"
CONFIG="${CONFIG:-configs/imagenet.py:tpu_v4_32}"
WORKDIR="${WORKDIR:-}"   # gs://bucket/... or a folder every worker sees
EXTRA_FLAGS="${EXTRA_FLAGS:-}"
PREEMPTIBLE="${PREEMPTIBLE:-1}"
GCLOUD=(gcloud compute tpus tpu-vm)
PROJECT_FLAG=()
if [[ -n "$PROJECT" ]]; then PROJECT_FLAG=(--project="$PROJECT"); fi
