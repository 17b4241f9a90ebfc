"""Every bad input a demanding user tried, replayed: each gives a clear MechlinError.

One row per call: (what, call, expected error class, a fragment of its message). The calls run on
the tiny in-process models, so the whole table runs in seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mechlin
from mechlin.errors import (
    ArgumentError,
    ArgumentTypeError,
    EmptyInputError,
    MechlinError,
    OutOfRangeError,
    ProbeInputError,
    StoreMismatchError,
    UnknownModelError,
)

P = "The Eiffel Tower is located in the city of"
S = "Eiffel Tower"
FACT = (P, S, "Paris")


def _cases(m, tmp: Path):
    acts = torch.randn(40, 6)
    labels = torch.arange(40) % 2
    long_prompt = "word " * 3000 + "Eiffel Tower is in"
    file_path = tmp / "a-file"
    file_path.write_text("x")
    return [
        # options outside their Literal
        (
            "kind",
            lambda: mechlin.causal_trace(m, P, S, kind="bogus"),
            ArgumentError,
            "kind='bogus'",
        ),
        ("metric", lambda: mechlin.causal_trace(m, P, S, metric="p"), ArgumentError, "metric='p'"),
        ("method", lambda: mechlin.causal_trace(m, P, S, method="x"), ArgumentError, "method='x'"),
        (
            "sublayer",
            lambda: mechlin.sublayer_knockout_rate(m, [FACT], {S: ["Paris"]}, sublayer="bogus"),
            ArgumentError,
            "sublayer='bogus'",
        ),
        (
            "inner_product",
            lambda: mechlin.concept_directions(m, inner_product="bogus"),
            ArgumentError,
            "inner_product='bogus'",
        ),
        (
            "too_few",
            lambda: mechlin.concept_directions(m, too_few="bogus"),
            ArgumentError,
            "too_few='bogus'",
        ),
        (
            "multi_token",
            lambda: mechlin.answer_token(m, "Paris", multi_token="bogus"),
            ArgumentError,
            "multi_token='bogus'",
        ),
        (
            "residual method",
            lambda: mechlin.residual_direction(m, ["a b", "c d"], [0, 1], layer=0, method="bogus"),
            ArgumentError,
            "method='bogus'",
        ),
        (
            "pooling",
            lambda: mechlin.collect_activations(m, ["a b"], pooling="sum"),
            ArgumentError,
            "pooling='sum'",
        ),
        (
            "probe method",
            lambda: mechlin.sparse_probe(acts, labels, k=1, method="best"),
            ArgumentError,
            "method='best'",
        ),
        # numbers outside their range
        (
            "window 0",
            lambda: mechlin.attention_knockout(m, P, S, window=0),
            ArgumentError,
            "window=0",
        ),
        (
            "window -3",
            lambda: mechlin.causal_trace(m, P, S, kind="mlp", window=-3),
            ArgumentError,
            "window=-3",
        ),
        (
            "knockout_curves window",
            lambda: mechlin.knockout_curves(m, [FACT], window=0),
            ArgumentError,
            "window=0",
        ),
        (
            "dissect window",
            lambda: mechlin.dissect_recall(m, [FACT], window=-1),
            ArgumentError,
            "window=-1",
        ),
        (
            "noise nan",
            lambda: mechlin.causal_trace(m, P, S, noise=float("nan")),
            ArgumentError,
            "noise=nan",
        ),
        (
            "noise inf",
            lambda: mechlin.causal_trace(m, P, S, noise=float("inf")),
            ArgumentError,
            "noise=inf",
        ),
        (
            "noise -1",
            lambda: mechlin.causal_trace(m, P, S, noise=-1.0),
            ArgumentError,
            "noise=-1.0",
        ),
        (
            "memory_budget",
            lambda: mechlin.causal_trace(m, P, S, memory_budget=0),
            ArgumentError,
            "memory_budget=0",
        ),
        (
            "n_samples 0",
            lambda: mechlin.causal_trace(m, P, S, n_samples=0),
            ArgumentError,
            "n_samples=0",
        ),
        (
            "n_samples -1",
            lambda: mechlin.causal_trace(m, P, S, n_samples=-1),
            ArgumentError,
            "n_samples=-1",
        ),
        (
            "positions 100",
            lambda: mechlin.causal_trace(m, P, S, positions=[100]),
            OutOfRangeError,
            "outside the prompt",
        ),
        (
            "positions -100",
            lambda: mechlin.causal_trace(m, P, S, positions=[-100]),
            OutOfRangeError,
            "outside the prompt",
        ),
        (
            "block 100",
            lambda: mechlin.attention_knockout(m, P, S, block=[100]),
            OutOfRangeError,
            "outside the prompt",
        ),
        (
            "layers dup",
            lambda: mechlin.causal_trace(m, P, S, layers=[0, 0]),
            ArgumentError,
            "duplicates",
        ),
        (
            "layer range",
            lambda: mechlin.causal_trace(m, P, S, layers=[7]),
            OutOfRangeError,
            "out of range",
        ),
        (
            "ks -1",
            lambda: mechlin.probe_sweep(acts, labels, ks=(-1,)),
            ArgumentError,
            "positive integers",
        ),
        ("k 0", lambda: mechlin.sparse_probe(acts, labels, k=0), ArgumentError, "k=0"),
        (
            "top_k 0",
            lambda: mechlin.attributes_rate(m, [FACT], {S: ["Paris"]}, top_k=0),
            ArgumentError,
            "top_k=0",
        ),
        (
            "keep 0",
            lambda: mechlin.attributes_rate(m, [FACT], {S: ["Paris"]}, keep=0),
            ArgumentError,
            "keep=0",
        ),
        (
            "n_random 0",
            lambda: mechlin.linearity_test(
                m,
                mechlin.concept_directions(m, {"x": [(5, 6), (7, 8), (9, 10)]}),
                n_random=0,
            ),
            ArgumentError,
            "n_random=0",
        ),
        (
            "test_fraction",
            lambda: mechlin.residual_direction(
                m, ["a b", "c d"], [0, 1], layer=0, test_fraction=1.5
            ),
            ArgumentError,
            "test_fraction=1.5",
        ),
        (
            "batch_size",
            lambda: mechlin.collect_activations(m, ["a b"], batch_size=0),
            ArgumentError,
            "batch_size=0",
        ),
        # raw errors before: now clear ones
        (
            "kinds empty",
            lambda: mechlin.average_causal_effects(m, [FACT], kinds=()),
            EmptyInputError,
            "kinds is empty",
        ),
        (
            "kinds str",
            lambda: mechlin.average_causal_effects(m, [FACT], kinds="resid"),
            ArgumentTypeError,
            "not one string",
        ),
        (
            "4-d hook",
            lambda: mechlin.collect_activations(
                m, ["a b c"], hooks=["blocks.0.attn.hook_pattern"], progress=False
            ),
            ArgumentError,
            "per-head hooks",
        ),
        (
            "bare string texts",
            lambda: mechlin.collect_activations(m, "hello"),
            ArgumentTypeError,
            "one string",
        ),
        (
            "unknown argument",
            lambda: mechlin.causal_trace(m, P, S, samples=3),
            ArgumentTypeError,
            "unexpected keyword argument 'samples'",
        ),
        # long prompts: one clear error instead of a 100 kB message or a silent cut
        (
            "long prompt trace",
            lambda: mechlin.causal_trace(m, long_prompt, S),
            OutOfRangeError,
            "context holds",
        ),
        (
            "long prompt knockout",
            lambda: mechlin.attention_knockout(m, long_prompt, S),
            OutOfRangeError,
            "context holds",
        ),
        (
            "long prompt span",
            lambda: mechlin.find_subject_span(m, long_prompt, S),
            OutOfRangeError,
            "context holds",
        ),
        (
            "long prompt steering",
            lambda: mechlin.steering_sweep(
                m, long_prompt, torch.zeros(m.cfg.d_model), pairs={"x": ("the", "of")}
            ),
            OutOfRangeError,
            "context holds",
        ),
        # identical classes: no direction rather than a NaN one
        (
            "no direction",
            lambda: mechlin.residual_direction(
                m, ["same text"] * 4, [0, 0, 1, 1], layer=0, method="mean_diff"
            ),
            ProbeInputError,
            "do not differ",
        ),
        # models and devices
        ("empty model name", lambda: mechlin.load_model(""), UnknownModelError, "empty"),
        (
            "bogus device",
            lambda: mechlin.load_model("smollm2-135m", device="bogus"),
            ArgumentError,
            "device='bogus'",
        ),
        (
            "no cuda",
            lambda: (
                mechlin.load_model("smollm2-135m", device="cuda")
                if not torch.cuda.is_available()
                else (_ for _ in ()).throw(ArgumentError("no cuda device: skipped check"))
            ),
            ArgumentError,
            "cuda",
        ),
        # stores
        (
            "out is a file",
            lambda: mechlin.average_causal_effects(m, [FACT], out=file_path),
            StoreMismatchError,
            "is a file",
        ),
        (
            "result file is a tensor",
            lambda: (
                torch.save(torch.zeros(2), tmp / "t.pt"),
                mechlin.CausalTrace.load(tmp / "t.pt"),
            ),
            ArgumentError,
            "non-mechlin",
        ),
    ]


def test_every_bad_input_gives_a_clear_error(tiny, tmp_path: Path) -> None:
    failures = []
    cases = _cases(tiny, tmp_path)
    for what, call, error, fragment in cases:
        try:
            call()
        except error as e:
            assert isinstance(e, MechlinError), (what, type(e))
            if fragment not in str(e):
                failures.append(f"{what}: message {str(e)[:200]!r} lacks {fragment!r}")
        except Exception as e:  # the table reports every wrong kind of error
            failures.append(f"{what}: {type(e).__name__}: {str(e)[:200]}")
        else:
            failures.append(f"{what}: no error")
    assert not failures, f"{len(failures)} of {len(cases)} inputs:\n" + "\n".join(failures)


def test_long_texts_are_truncated_with_a_warning(tiny, caplog: pytest.LogCaptureFixture) -> None:
    text = "word " * 3000
    with caplog.at_level("WARNING"):
        acts = mechlin.collect_activations(
            tiny, [text, "short text"], max_tokens=None, progress=False
        )
    assert "1 of 2 texts were longer" in caplog.text
    assert int(acts.n_tokens[0]) <= tiny.cfg.n_ctx
