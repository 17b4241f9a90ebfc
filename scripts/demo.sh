#!/usr/bin/env bash
# Set everything up (first run: a few minutes) and run the main demo, Geva et al.'s dissection
# of factual recall on gemma-3-270m; it writes demos/out/dissect_factual_recall.html.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false
.venv/bin/python demos/dissect_factual_recall.py "$@"
