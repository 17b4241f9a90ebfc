#!/usr/bin/env bash
# Set everything up (first run: a few minutes) and run the main demo; it writes an HTML report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false
.venv/bin/python demos/first_look.py "$@"
