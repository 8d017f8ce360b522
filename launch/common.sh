# Shared by the launch scripts: settings from the environment, DRY_RUN=1 prints.
# Every command goes through `run`, so DRY_RUN=1 prints exactly what would run.

set -euo pipefail

run() {
  if [[ "${DRY_RUN:-0}" == "1" ]]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

require() {  # require VAR...: stop with a message if a setting is missing
  local v
  for v in "$@"; do
    if [[ -z "${!v:-}" ]]; then
      echo "error: set $v (see launch/README.md)" >&2
      exit 2
    fi
  done
}
