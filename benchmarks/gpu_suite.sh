#!/usr/bin/env bash
# The GPU benchmark suite in one command (benchmarks/gpu_suite.py): our train
# step vs PyTorch's (AMP + channels_last, torch.compile) for ResNet-50 at
# 224 px in bf16 and float32 and ResNet-18 cifar, with images/s, step time,
# MFU, peak memory, and device vs host augmentation; one Markdown table in
# $OUTPUT (JSON lines beside it).
#
# The GPU machine has JAX (CUDA), flax, optax, orbax, absl, chex, PyYAML and
# PyTorch but no ml_collections, dm-pix, TensorFlow, TFDS or clu. The suite
# needs none of TensorFlow / TFDS / clu (the host augmentation row is then
# skipped with a note); ml_collections (the configs) and dm-pix (on-device
# augmentation) are small pure-Python wheels, installed from $WHEELS into a
# scratch folder when they do not import. Get them once, where pip reaches
# PyPI, in the repository root (.whl/ is git-ignored):
#
#   bash benchmarks/gpu_suite.sh download
#
# Then on the GPU machine (through the device tool: carry [".whl"]):
#
#   OUTPUT=$OUT/gpu_suite.md bash benchmarks/gpu_suite.sh
#   OUTPUT=$OUT/r50.md bash benchmarks/gpu_suite.sh --entries=resnet50_bf16,resnet50_fp32
#
# On a CPU, tiny sizes (a smoke run):  bash benchmarks/gpu_suite.sh --quick
# Arguments go to gpu_suite.py (--help lists them). Environment: PYTHON
# (default .venv/bin/python if present, else python3), WHEELS (.whl), SITE
# (/tmp/simsiam_bench_site), OUTPUT (gpu_suite.md).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/simsiam_bench_site}
OUTPUT=${OUTPUT:-gpu_suite.md}

if [[ "${1:-}" == download ]]; then
  exec "$PYTHON" -m pip download --no-deps --only-binary=:all: -d "$WHEELS" \
    ml_collections==1.1.0 dm-pix==0.4.5
fi

if ! "$PYTHON" -c 'import ml_collections, dm_pix' 2>/dev/null; then
  if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "ml_collections or dm_pix is missing and $WHEELS holds no wheels:" \
      "run 'bash benchmarks/gpu_suite.sh download' where pip reaches PyPI" \
      "and bring $WHEELS along." >&2
    exit 2
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_suite.py --output="$OUTPUT" "$@"
