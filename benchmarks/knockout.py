"""Attention-knockout sweep time: mechlin's one batch against one forward per (layer, source set).

On one prompt, the full sweep (every centre layer x the three source sets, window 9) runs as
  mechlin     attention_knockout's batched rows (one forward of 1 + 3 x n_layers rows)
  reference   tests/reference/knockout_ref.py: one plain forward per (centre layer, source set)
in the same process, and the script prints both times, the speed-up and the max abs difference
of the log-probabilities.

Run: .venv/bin/python benchmarks/knockout.py [--model smollm2-135m] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import mechlin
    from mechlin.recall.knockout import knockout_probs, source_positions
    from mechlin.recall.tracing import window_layers
    from tests.reference.knockout_ref import reference_knockout

    model = mechlin.load_model(args.model, device=args.device)
    tokens = model.to_tokens(PROMPT)
    n_layers, n_pos = model.cfg.n_layers, tokens.shape[1]
    span = mechlin.find_subject_span(model, PROMPT, SUBJECT)
    with torch.no_grad():
        answer = int(model(tokens)[0, -1].argmax())
    sets = [source_positions(span, n_pos, b)[1] for b in ("subject", "non_subject", "last")]

    def fast() -> torch.Tensor:
        rows = [(window_layers(c, 9, n_layers), s) for s in sets for c in range(n_layers)]
        return knockout_probs(model, tokens, rows, answer)

    def slow() -> torch.Tensor:
        return torch.cat(
            [reference_knockout(model, PROMPT, s, range(n_layers), 9, answer) for s in sets]
        )

    times = {}
    out = {}
    for name, fn in (("mechlin", fast), ("reference", slow)):
        fn()  # warm-up
        samples = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            out[name] = fn()
            if args.device == "cuda":
                torch.cuda.synchronize()
            samples.append(time.perf_counter() - t)
        times[name] = statistics.median(samples)
    diff = float((out["mechlin"].cpu() - out["reference"].cpu()).abs().max())
    speedup = times["reference"] / times["mechlin"]
    print(
        f"{args.model} ({args.device}), {3 * n_layers} knockouts: "
        f"mechlin {times['mechlin']:.2f} s, one forward each {times['reference']:.2f} s: "
        f"{speedup:.1f}x; max |diff| of log p {diff:.1e}"
    )
    print(
        json.dumps(
            {
                "model": args.model,
                "device": args.device,
                **times,
                "speedup": speedup,
                "max_abs_diff": diff,
            }
        )
    )


if __name__ == "__main__":
    main()
