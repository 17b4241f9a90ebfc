#!/usr/bin/env bash
# The whole check, the same locally and in CI: setup, lint, type check, tests, demos.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" PYTHONUNBUFFERED=1 MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false
# Nothing may reach a model hub: every model is bundled or built in-process.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

echo "== ruff"
ruff format --check .
ruff check .
echo "== mypy"
mypy
echo "== pytest (doctests and jaxtyping/beartype runtime checks included)"
python -m pytest tests mechlin --ignore=tests/test_notebooks.py \
    --ignore=tests/test_reports_browser.py
echo "== command line"
mechlin --help >/dev/null
mechlin models
echo "== notebooks (executed at their small size) and every report in headless chromium"
# Screenshots and the executed notebooks (HTML) go to tests/artifacts/ (MECHLIN_ARTIFACTS).
python -m pytest tests/test_notebooks.py tests/test_reports_browser.py -rs
echo "== demos"
out=$(mktemp -d)
python demos/dissect_factual_recall.py --model smollm2-135m --n-facts 12 --out "$out/dissect.html"
python demos/first_look.py --out "$out/first_look.html"
# Causal tracing at CI size (the demo's default checks all 1209 facts of known_1000 for
# knowledge and traces 4 known facts per model with 10 samples).
python demos/causal_tracing.py --models smollm2-135m --check-facts 40 --n-facts 1 --n-samples 2 \
    --out "$out/ct"
# Sparse probing and concept directions at CI size (defaults: both models, full datasets).
python demos/sparse_probing.py --models smollm2-135m --n-per-language 12 --n-per-class 12 \
    --bigrams 2 --features language compound --ablation-texts 4 --methods-k 3 \
    --out "$out/sparse_probing.html"
python demos/concept_directions.py --models smollm2-135m --out "$out/concept_directions.html"
# Toy models of superposition at CI size (the default adds the smollm2 bridge, ~5 min).
python demos/superposition.py --steps 800 --lr 1e-2 --grid 5 --seeds 1 --skip-bridge \
    --out "$out/superposition.html"
# Origins of linear representations at CI size (simulation sweep + the smollm2 alignment check).
python demos/origins_of_linearity.py --small --out "$out/origins_of_linearity.html"
# The Jiang et al. reproduction at CI size (the committed figures: docs/reproductions/jiang2024.md,
# from the same script without --tiny), and the batched grid's benchmark at smoke size.
python scripts/reproduce_jiang2024.py --tiny --out "$out/jiang2024"
python benchmarks/origins_grid.py --smoke --json "$out/origins_grid.json"
# Cognition vs expression at CI size (smollm2, 24 ARC-Easy items, a 2-step fine-tune).
python demos/cognition_vs_expression.py --models smollm2-135m --datasets arc_easy --n-items 24 \
    --ft-base smollm2-135m --ft-steps 2 --ft-train 16 --ft-saves 2 --ft-n-items 24 \
    --n-samples 4 --pass-k 1 4 --shots 0 --out "$out/cognition.html"
# The Yan et al. phase series at CI size: LoRA SFT, DPO, every measure and the verdicts on the
# tiny model (the committed figures: docs/reproductions/yan2024.md, the same script without --tiny).
python scripts/reproduce_yan2024.py --tiny --out "$out/yan2024"
# Compression at CI size: the benchmark's script on 3 KB of the unseen corpus (the committed
# figures: benchmarks/results/compression-*.json, the whole corpus), then a command-line roundtrip
# decoded in a fresh process.
python benchmarks/compression.py --model smollm2-135m --bytes 3000 --window 128 --batch-size 16 \
    --json "$out/compression.json"
head -c 3000 README.md > "$out/readme.md"
mechlin compress smollm2-135m "$out/readme.md" --window 128 --quiet
mechlin decompress "$out/readme.md.mlz" -o "$out/readme.back" --quiet
cmp "$out/readme.md" "$out/readme.back"
# Adaptive tracing against the exact trace: the benchmark's script at smoke size (one fact).
python benchmarks/adaptive_trace.py --models smollm2-135m --n-facts 1 --kinds mlp --n-samples 2 \
    --rome-facts 0 --out "$out/adaptive"
echo "== all checks passed"
