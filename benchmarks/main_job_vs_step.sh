#!/usr/bin/env bash
# The main job's steady-state images/s against its train step alone, same sitting.
#
#   bash benchmarks/main_job_vs_step.sh [CHECKOUT ...]
#
# For each checkout (default: this one; pass an older `git worktree` to get
# "before" numbers beside "after"), runs the demo config's pretraining for
# STEPS steps (no kNN, no intermediate checkpoint) under /usr/bin/time, and
# the synthetic-batch step benchmark (benchmarks/train_step.py, JAX only).
# Prints the mean images/s of the progress lines after the first window
# (compilation excluded), the job's CPU utilisation, and the step's images/s.
# Uses this checkout's .venv.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$HERE/.venv/bin/python}"
STEPS="${STEPS:-160}"
ROUNDS="${ROUNDS:-2}"
CHECKOUTS=("$@")
[ ${#CHECKOUTS[@]} -eq 0 ] && CHECKOUTS=("$HERE")
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

job() {  # checkout round
  local dir="$1" log="$TMP/job_$2_$(basename "$1").log"
  (cd "$dir" && /usr/bin/time -f 'TIME wall=%e cpu=%P' "$PY" -m simsiam_jax.main \
      --config=configs/fashion_mnist.py --workdir="$TMP/wd_$2_$(basename "$dir")" \
      --config.num_train_steps="$STEPS" --config.knn.every_epochs=-1 \
      --config.checkpoint_every_steps=100000 >"$log" 2>&1)
  "$PY" - "$log" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
rates = [float(m) for m in re.findall(r'\| (\d+) img/s \|', text)][1:]
t = re.search(r'TIME wall=([\d.]+) cpu=(\d+)%', text)
print(f'main job: {sum(rates) / len(rates):.0f} img/s (mean of {len(rates)} '
      f'windows, min {min(rates):.0f}, max {max(rates):.0f}); process '
      f'{t.group(1)} s wall, CPU {t.group(2)} %')
EOF
}

step() {  # checkout
  local dir="$1" extra=()
  grep -q torch_python "$dir/benchmarks/train_step.py" && extra=(--torch_python=none)
  (cd "$dir" && PYTHONPATH=. "$PY" benchmarks/train_step.py \
      --config=configs/fashion_mnist.py --steps=5 --warmup=2 "${extra[@]}" 2>/dev/null) |
    grep -o '"images_per_sec[_a-z]*": [0-9.]*' | head -1 | sed 's/^/step alone: /'
}

echo "date: $(date -u +%F) host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
for round in $(seq "$ROUNDS"); do
  for dir in "${CHECKOUTS[@]}"; do
    echo "== round $round: $dir ($(cd "$dir" && git rev-parse --short HEAD))"
    job "$dir" "$round"
    step "$dir"
  done
done
