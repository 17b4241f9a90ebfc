"""Every bad input a demanding user tried, replayed: each gives a clear MechlinError.

One row per call: (what, call, expected error class, a fragment of its message). The calls run on
the tiny in-process models, so the whole table runs in seconds. Every input the issue listed,
and every one tried since, is a row: none is left that gives a raw error.
"""

from __future__ import annotations

from pathlib import Path

import jaxtyping
import pytest
import torch

import mechlin
from mechlin.datasets.features import FeatureDataset
from mechlin.datasets.mcq import load_mcq
from mechlin.errors import (
    ArgumentError,
    ArgumentTypeError,
    ConceptPairError,
    EmptyInputError,
    MechlinError,
    MissingHookError,
    MultiTokenAnswerError,
    NotInResultError,
    OutOfRangeError,
    ProbeInputError,
    StoreMismatchError,
    SubjectNotFoundError,
    TooFewPairsError,
    UnknownModelError,
)
from mechlin.recall.extraction import head_outputs

P = "The Eiffel Tower is located in the city of"
S = "Eiffel Tower"
FACT = (P, S, "Paris")
ATTR = {S: ["Paris"]}
NAN = float("nan")


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


def word_ds(name: str = "cat") -> FeatureDataset:
    pos = [f"the {w} cat sat down" for w in ("big", "old", "red", "sad")] * 3
    neg = [f"the {w} dog ran off" for w in ("big", "old", "red", "sad")] * 3
    return FeatureDataset(
        name=name,
        texts=tuple(pos + neg),
        labels=torch.tensor([1] * 12 + [0] * 12),
        classes=("dog", "cat"),
        pooling="max",
        groups=None,
        source="test",
    )


def _more_cases(m, tmp: Path):
    """The rest of the issue's list, and what a demanding user tries next (issue #17)."""
    acts = torch.randn(40, 6)
    labels = torch.arange(40) % 2
    nan_acts = acts.clone()
    nan_acts[3, 2] = NAN

    def dirs() -> mechlin.ConceptDirections:
        pairs = {"x": [(5, 6), (7, 8), (9, 10)], "y": [(11, 12), (13, 14)]}
        return mechlin.concept_directions(m, pairs)

    ds = load_mcq("arc_easy", n=6, seed=0)
    file_path = tmp / "a-file"
    file_path.write_text("x")

    def nan_classify():
        d = word_ds()
        hooks = [mechlin.hook_name(m, "mlp_post", 0)]
        a = mechlin.collect_activations(m, d, hooks=hooks, pooling="max", progress=False)
        a[hooks[0]].fill_(NAN)
        return mechlin.classify_neurons(
            m, [d], broad_texts=["one two"], layers=[0], activations={"cat": a}, progress=False
        )

    def saved(tag, mutate):
        t = mechlin.causal_trace(m, "Big Ben is in", "Big Ben", n_samples=1)
        path = t.save(tmp / f"{tag}.pt")
        data = torch.load(path, weights_only=True)
        mutate(data)
        torch.save(data, path)
        return mechlin.CausalTrace.load(path)

    def saved_dirs(mutate):
        d = dirs()
        path = d.save(tmp / "dirs.pt")
        data = torch.load(path, weights_only=True)
        mutate(data)
        torch.save(data, path)
        return mechlin.ConceptDirections.load(path)

    def set_(k, v):
        return lambda d: d.__setitem__(k, v)

    def tampered(result, tag, mutate):
        """``result`` saved, changed by ``mutate`` on disk, and loaded again."""
        path = result.save(tmp / f"{tag}.pt")
        data = torch.load(path, weights_only=True)
        mutate(data)
        torch.save(data, path)
        return type(result).load(path)

    def sweep() -> mechlin.SteeringSweep:
        return mechlin.steering_sweep(
            m, P, torch.zeros(m.cfg.d_model), pairs={"x": ("the", "of")}, alphas=[0.0, 1.0]
        )

    def extraction() -> mechlin.ExtractionRates:
        return mechlin.extraction_rates(m, [(P, S)], progress=False)

    def heads_at(pos):
        names = [mechlin.hook_name(m, s, 0) for s in ("z", "attn_out", "attn_proj_out")]
        _, cache = m.run_with_cache(m.to_tokens(P), names_filter=names)
        return head_outputs(m, cache, 0, pos=pos)

    def steer_enter(**kw):
        with mechlin.steer(m, torch.zeros(m.cfg.d_model), **kw):
            pass

    return [
        (
            "ace kinds bogus",
            lambda: mechlin.average_causal_effects(m, [FACT], kinds=("bogus",)),
            ArgumentError,
            "kinds holds 'bogus', which is not",
        ),
        (
            "ace metric bogus",
            lambda: mechlin.average_causal_effects(m, [FACT], metric="bogus"),
            ArgumentError,
            "metric='bogus' is not allowed; use one",
        ),
        (
            "knockout_curves blocks bogus",
            lambda: mechlin.knockout_curves(m, [FACT], blocks=("bogus",)),
            ArgumentError,
            "blocks holds 'bogus', which is not",
        ),
        (
            "attention_knockout block bogus",
            lambda: mechlin.attention_knockout(m, P, S, block="bogus"),
            ArgumentError,
            "block='bogus' is not allowed; use one",
        ),
        (
            "sparse_probe split",
            lambda: mechlin.sparse_probe(acts, labels, k=1, split="bogus"),
            ArgumentError,
            "split='bogus' is not allowed; use one",
        ),
        (
            "probe_sweep methods",
            lambda: mechlin.probe_sweep(acts, labels, methods=("bogus",)),
            ArgumentError,
            "methods holds 'bogus', which is not",
        ),
        (
            "residual site",
            lambda: mechlin.residual_direction(m, ["a b", "c d"], [0, 1], layer=0, site="bogus"),
            ArgumentError,
            "site='bogus' is not allowed; use one",
        ),
        (
            "residual position",
            lambda: mechlin.residual_direction(
                m, ["a b", "c d"], [0, 1], layer=0, position="first"
            ),
            ArgumentError,
            "position='first' is not allowed; use",
        ),
        (
            "steering positions",
            lambda: mechlin.steering_sweep(
                m, P, torch.zeros(m.cfg.d_model), pairs={"x": ("the", "of")}, positions="bogus"
            ),
            ArgumentError,
            "positions='bogus' is not allowed; use",
        ),
        (
            "steering layer str",
            lambda: mechlin.steering_sweep(
                m, P, torch.zeros(m.cfg.d_model), pairs={"x": ("the", "of")}, layer="first"
            ),
            ArgumentError,
            "layer='first' is not allowed; use one",
        ),
        (
            "alignment inner_product",
            lambda: mechlin.embedding_unembedding_alignment(m, dirs(), inner_product="bogus"),
            ArgumentError,
            "inner_product='bogus' is not allowed;",
        ),
        (
            "hook_name site",
            lambda: mechlin.hook_name(m, "bogus", 0),
            ArgumentError,
            "site='bogus' is not allowed; use one",
        ),
        (
            "tiny arch",
            lambda: mechlin.tiny_model(arch="bogus"),
            ArgumentError,
            "arch='bogus' is not allowed; use one",
        ),
        (
            "probe_cognition probe",
            lambda: mechlin.probe_cognition(m, ds, probe="bogus"),
            ArgumentError,
            "probe='bogus' is not allowed; use one",
        ),
        (
            "probe_cognition select",
            lambda: mechlin.probe_cognition(m, ds, select="bogus"),
            ArgumentError,
            "select='bogus' is not allowed; use one",
        ),
        (
            "expression sample_from",
            lambda: mechlin.expression_scores(m, ds, sample_from="bogus"),
            ArgumentError,
            "sample_from='bogus' is not allowed;",
        ),
        (
            "toy hidden",
            lambda: mechlin.toy_superposition(4, 2, hidden="bogus"),
            ArgumentError,
            "hidden='bogus' is not allowed; use one",
        ),
        (
            "origins optimizer",
            lambda: mechlin.train_origins(mechlin.LatentConceptModel(4), optimizer="bogus"),
            ArgumentError,
            "optimizer='bogus' is not allowed; use",
        ),
        (
            "origins encoder",
            lambda: mechlin.train_origins(mechlin.LatentConceptModel(4), context_encoder="bogus"),
            ArgumentError,
            "context_encoder='bogus' is not",
        ),
        (
            "cve probe",
            lambda: mechlin.cognition_vs_expression({"a": m}, ds, probe="bogus"),
            ArgumentError,
            "probe='bogus' is not allowed; use one",
        ),
        (
            "classify split",
            lambda: mechlin.classify_neurons(m, [word_ds()], broad_texts=["a"], split="bogus"),
            ArgumentError,
            "split='bogus' is not allowed; use one",
        ),
        (
            "sublayer window 0",
            lambda: mechlin.sublayer_knockout_rate(m, [FACT], ATTR, window=0),
            ArgumentError,
            "window=0 must be a positive integer",
        ),
        (
            "sublayer window -2",
            lambda: mechlin.sublayer_knockout_rate(m, [FACT], ATTR, window=-2),
            ArgumentError,
            "window=-2 must be a positive integer",
        ),
        (
            "attention_knockout window -2",
            lambda: mechlin.attention_knockout(m, P, S, window=-2),
            ArgumentError,
            "window=-2 must be a positive integer",
        ),
        (
            "causal_trace window 0",
            lambda: mechlin.causal_trace(m, P, S, window=0),
            ArgumentError,
            "window=0 must be a positive integer",
        ),
        (
            "causal_trace window 2.5",
            lambda: mechlin.causal_trace(m, P, S, window=2.5),
            ArgumentError,
            "window=2.5 must be a positive integer",
        ),
        (
            "ace window 0",
            lambda: mechlin.average_causal_effects(m, [FACT], window=0),
            ArgumentError,
            "window=0 must be a positive integer",
        ),
        (
            "ace n_samples 0",
            lambda: mechlin.average_causal_effects(m, [FACT], n_samples=0),
            ArgumentError,
            "n_samples=0 must be a positive integer",
        ),
        (
            "ace noise -1",
            lambda: mechlin.average_causal_effects(m, [FACT], noise=-1.0),
            ArgumentError,
            'noise=-1.0 must be "3sigma" or a',
        ),
        (
            "ace noise nan",
            lambda: mechlin.average_causal_effects(m, [FACT], noise=NAN),
            ArgumentError,
            'noise=nan must be "3sigma" or a',
        ),
        (
            "ace memory_budget -5",
            lambda: mechlin.average_causal_effects(m, [FACT], memory_budget=-5),
            ArgumentError,
            "memory_budget=-5 must be a positive",
        ),
        (
            "causal_trace seed -1",
            lambda: mechlin.causal_trace(m, P, S, seed=-1),
            ArgumentError,
            "seed=-1 must be a non-negative integer",
        ),
        (
            "causal_trace noise 0",
            lambda: mechlin.causal_trace(m, P, S, noise=0.0),
            ArgumentError,
            'noise=0.0 must be "3sigma" or a',
        ),
        (
            "causal_trace noise bool",
            lambda: mechlin.causal_trace(m, P, S, noise=True),
            ArgumentError,
            "noise=True is not allowed; use one of",
        ),
        (
            "causal_trace positions dup",
            lambda: mechlin.causal_trace(m, P, S, positions=[1, 1]),
            ArgumentError,
            "positions holds duplicates [1]: give",
        ),
        (
            "attention_knockout layers dup",
            lambda: mechlin.attention_knockout(m, P, S, layers=[0, 0]),
            ArgumentError,
            "layers holds duplicates [0]: give each",
        ),
        (
            "attention_knockout layers 99",
            lambda: mechlin.attention_knockout(m, P, S, layers=[99]),
            OutOfRangeError,
            "layer 99 is out of range: the model",
        ),
        (
            "attention_knockout block -100",
            lambda: mechlin.attention_knockout(m, P, S, block=[-100]),
            OutOfRangeError,
            "block positions [-100] are outside the",
        ),
        (
            "linearity n_random -5",
            lambda: mechlin.linearity_test(m, dirs(), n_random=-5),
            ArgumentError,
            "n_random=-5 must be a positive integer",
        ),
        (
            "linearity chunk 0",
            lambda: mechlin.linearity_test(m, dirs(), n_random=10, chunk=0),
            ArgumentError,
            "chunk=0 must be a positive integer (>=",
        ),
        (
            "linearity quantile 1.5",
            lambda: mechlin.linearity_test(m, dirs(), n_random=10, quantile=1.5),
            ArgumentError,
            "quantile=1.5 must be a fraction in (0,",
        ),
        (
            "linearity quantile 0",
            lambda: mechlin.linearity_test(m, dirs(), n_random=10, quantile=0.0),
            ArgumentError,
            "quantile=0.0 must be a fraction in (0,",
        ),
        (
            "attributes top_k -1",
            lambda: mechlin.attributes_rate(m, [FACT], ATTR, top_k=-1),
            ArgumentError,
            "top_k=-1 must be a positive integer",
        ),
        (
            "attributes keep -3",
            lambda: mechlin.attributes_rate(m, [FACT], ATTR, keep=-3),
            ArgumentError,
            "keep=-3 must be a positive integer (>=",
        ),
        (
            "sublayer at_layer 99",
            lambda: mechlin.sublayer_knockout_rate(m, [FACT], ATTR, at_layer=99),
            OutOfRangeError,
            "layer 99 is out of range: the model",
        ),
        (
            "sublayer top_k 0",
            lambda: mechlin.sublayer_knockout_rate(m, [FACT], ATTR, top_k=0),
            ArgumentError,
            "top_k=0 must be a positive integer (>=",
        ),
        (
            "sublayer keep 0",
            lambda: mechlin.sublayer_knockout_rate(m, [FACT], ATTR, keep=0),
            ArgumentError,
            "keep=0 must be a positive integer (>=",
        ),
        (
            "attributes keep > top_k",
            lambda: mechlin.attributes_rate(m, [FACT], ATTR, top_k=10, keep=20),
            ArgumentError,
            "attributes_rate(): keep=20 must be <= top_k=10: keep counts the tokens kept from",
        ),
        (
            "attributes keep > vocabulary",
            lambda: mechlin.attributes_rate(m, [FACT], ATTR, top_k=1000, keep=500),
            ArgumentError,
            "keep=500 exceeds the model's vocabulary (400 tokens): no state could have 500",
        ),
        (
            "sublayer keep > top_k",
            lambda: mechlin.sublayer_knockout_rate(m, [FACT], ATTR, top_k=5, keep=6),
            ArgumentError,
            "sublayer_knockout_rate(): keep=6 must be <= top_k=5",
        ),
        (
            "top_heads k 0",
            lambda: extraction().top_heads(0),
            ArgumentError,
            "ExtractionRates.top_heads(): k=0 must be a positive number of heads (>= 1)",
        ),
        (
            "top_heads k -2",
            lambda: extraction().top_heads(-2),
            ArgumentError,
            "k=-2 must be a positive number of heads",
        ),
        (
            "head_outputs pos 99",
            lambda: heads_at(99),
            OutOfRangeError,
            "head_outputs(): pos=99 is out of range: the cached run has positions 0..",
        ),
        (
            "collect batch_size -1",
            lambda: mechlin.collect_activations(m, ["a b"], batch_size=-1),
            ArgumentError,
            "batch_size=-1 must be a positive",
        ),
        (
            "collect max_tokens 0",
            lambda: mechlin.collect_activations(m, ["a b"], max_tokens=0),
            ArgumentError,
            "max_tokens=0 must be a positive",
        ),
        (
            "collect chunk_size 0",
            lambda: mechlin.collect_activations(m, ["a b"], chunk_size=0),
            ArgumentError,
            "chunk_size=0 must be a positive",
        ),
        (
            "sparse_probe k -1",
            lambda: mechlin.sparse_probe(acts, labels, k=-1),
            ArgumentError,
            "k=-1 must be a positive number of",
        ),
        (
            "sparse_probe k too big",
            lambda: mechlin.sparse_probe(acts, labels, k=100),
            ProbeInputError,
            "k=100 must be between 1 and the 6",
        ),
        (
            "sparse_probe test_fraction 0",
            lambda: mechlin.sparse_probe(acts, labels, k=1, test_fraction=0.0),
            ArgumentError,
            "test_fraction=0.0 must be a fraction",
        ),
        (
            "sparse_probe test_fraction 1",
            lambda: mechlin.sparse_probe(acts, labels, k=1, test_fraction=1.0),
            ArgumentError,
            "test_fraction=1.0 must be a fraction",
        ),
        (
            "sparse_probe C 0",
            lambda: mechlin.sparse_probe(acts, labels, k=1, C=0.0),
            ArgumentError,
            "C=0.0 must be a positive finite number",
        ),
        (
            "sparse_probe C -1",
            lambda: mechlin.sparse_probe(acts, labels, k=1, C=-1.0),
            ArgumentError,
            "C=-1.0 must be a positive finite",
        ),
        (
            "probe_sweep ks 0",
            lambda: mechlin.probe_sweep(acts, labels, ks=(0,)),
            ArgumentError,
            "ks must hold positive integers, got",
        ),
        (
            "probe_sweep ks dup",
            lambda: mechlin.probe_sweep(acts, labels, ks=(2, 2)),
            ArgumentError,
            "ks holds duplicates [2]: give each",
        ),
        (
            "probe_sweep ks empty",
            lambda: mechlin.probe_sweep(acts, labels, ks=()),
            ProbeInputError,
            "no k in () fits 6 neurons and the",
        ),
        (
            "residual layer 99",
            lambda: mechlin.residual_direction(m, ["a b", "c d"], [0, 1], layer=99),
            OutOfRangeError,
            "layer 99 is out of range: the model",
        ),
        (
            "residual test_fraction 0",
            lambda: mechlin.residual_direction(
                m, ["a b", "c d"], [0, 1], layer=0, test_fraction=0.0
            ),
            ArgumentError,
            "test_fraction=0.0 must be a fraction",
        ),
        (
            "residual position 99",
            lambda: mechlin.residual_direction(m, ["a b", "c d"], [0, 1], layer=0, position=99),
            OutOfRangeError,
            "position 99 is out of range for a text",
        ),
        (
            "steering alphas nan",
            lambda: mechlin.steering_sweep(
                m, P, torch.zeros(m.cfg.d_model), pairs={"x": ("the", "of")}, alphas=(0.0, NAN)
            ),
            ArgumentError,
            "alphas holds [nan]: every value must",
        ),
        (
            "steering layer 99",
            lambda: mechlin.steering_sweep(
                m, P, torch.zeros(m.cfg.d_model), pairs={"x": ("the", "of")}, layer=99
            ),
            OutOfRangeError,
            "layer 99 is out of range: the model",
        ),
        (
            "steer alpha nan",
            lambda: steer_enter(layer=0, alpha=NAN),
            ArgumentError,
            "alpha=nan must be a number in [-inf,",
        ),
        (
            "steer layer 99",
            lambda: steer_enter(layer=99, alpha=1.0),
            OutOfRangeError,
            "layer 99 is out of range: the model",
        ),
        (
            "subject occurrence 5",
            lambda: mechlin.find_subject_span(m, P, S, occurrence=5),
            ArgumentError,
            "occurrence=5 but subject 'Eiffel",
        ),
        (
            "toy n_features 0",
            lambda: mechlin.toy_superposition(0, 2),
            ArgumentError,
            "n_features=0 must be a positive",
        ),
        (
            "toy d_hidden 0",
            lambda: mechlin.toy_superposition(4, 0),
            ArgumentError,
            "d_hidden=0 must be a positive integer",
        ),
        (
            "toy sparsity 1",
            lambda: mechlin.toy_superposition(4, 2, sparsity=1.0),
            ArgumentError,
            "sparsity=1.0 must be a probability in",
        ),
        (
            "toy sparsity -0.5",
            lambda: mechlin.toy_superposition(4, 2, sparsity=-0.5),
            ArgumentError,
            "sparsity=-0.5 must be a probability in",
        ),
        (
            "toy lr 0",
            lambda: mechlin.toy_superposition(4, 2, lr=0.0),
            ArgumentError,
            "lr=0.0 must be a positive finite",
        ),
        (
            "toy steps 0",
            lambda: mechlin.toy_superposition(4, 2, steps=0),
            ArgumentError,
            "steps=0 must be a positive integer (>=",
        ),
        (
            "toy weight_decay -1",
            lambda: mechlin.toy_superposition(4, 2, weight_decay=-1.0),
            ArgumentError,
            "weight_decay=-1.0 must be a",
        ),
        (
            "toy importance nan",
            lambda: mechlin.toy_superposition(4, 2, importance=NAN),
            ArgumentError,
            "importance=nan must be a finite number",
        ),
        (
            "origins steps 0",
            lambda: mechlin.train_origins(mechlin.LatentConceptModel(4), steps=0),
            ArgumentError,
            "steps=0 must be a positive integer (>=",
        ),
        (
            "origins d 0",
            lambda: mechlin.train_origins(mechlin.LatentConceptModel(4), d=0),
            ArgumentError,
            "d=0 must be a positive integer (>= 1)",
        ),
        (
            "origins lr -1",
            lambda: mechlin.train_origins(mechlin.LatentConceptModel(4), lr=-1.0),
            ArgumentError,
            "lr=-1.0 must be a positive finite",
        ),
        (
            "lcm 0 concepts",
            lambda: mechlin.LatentConceptModel(0),
            OutOfRangeError,
            "n_concepts=0 is out of range: it must",
        ),
        (
            "lcm edge_prob 2",
            lambda: mechlin.LatentConceptModel(4, edge_prob=2.0),
            OutOfRangeError,
            "edge_prob=2.0 is out of range: it must",
        ),
        (
            "superposition grid 0",
            lambda: mechlin.superposition_sweep(grid=0),
            ArgumentError,
            "grid must be an integer >= 1, got 0",
        ),
        (
            "superposition n_seeds 0",
            lambda: mechlin.superposition_sweep(n_seeds=0),
            ArgumentError,
            "n_seeds=0 must be a positive integer",
        ),
        (
            "origins_sweep n_concepts 0",
            lambda: mechlin.origins_sweep(n_concepts=0),
            ArgumentError,
            "n_concepts=0 must be a positive",
        ),
        (
            "origins_sweep edge_prob 2",
            lambda: mechlin.origins_sweep(edge_prob=2.0),
            ArgumentError,
            "edge_prob=2.0 must be a probability in",
        ),
        (
            "pass_at_k c > n",
            lambda: mechlin.pass_at_k(2, 3, 1),
            OutOfRangeError,
            "c=3 correct samples is not in 0..n=2",
        ),
        (
            "pass_at_k k 0",
            lambda: mechlin.pass_at_k(4, 1, 0),
            ArgumentError,
            "k=0 must be a positive number of",
        ),
        (
            "pass_at_k k > n",
            lambda: mechlin.pass_at_k(4, 1, 8),
            OutOfRangeError,
            "pass@k with k=8 needs at least k",
        ),
        (
            "load_mcq n 0",
            lambda: load_mcq("arc_easy", n=0),
            OutOfRangeError,
            "n=0: dataset 'arc_easy' has 570 items",
        ),
        (
            "load_mcq n huge",
            lambda: load_mcq("arc_easy", n=10**6),
            OutOfRangeError,
            "n=1000000: dataset 'arc_easy' has 570",
        ),
        (
            "load_mcq bogus",
            lambda: load_mcq("bogus_set"),
            ArgumentError,
            "'bogus_set' is neither a shipped",
        ),
        (
            "expression n_samples -1",
            lambda: mechlin.expression_scores(m, ds, n_samples=-1),
            ArgumentError,
            "n_samples=-1 must be a non-negative",
        ),
        (
            "expression temperature 0",
            lambda: mechlin.expression_scores(m, ds, n_samples=2, temperature=0.0),
            ArgumentError,
            "temperature=0.0 must be a positive",
        ),
        (
            "expression shots -1",
            lambda: mechlin.expression_scores(m, ds, shots=-1),
            OutOfRangeError,
            "shots must be >= 0, got -1",
        ),
        (
            "expression shots no pool",
            lambda: mechlin.expression_scores(m, ds, shots=2),
            ArgumentError,
            "shots=2 needs shot_pool=, a dataset",
        ),
        (
            "probe_cognition pca_dim 0",
            lambda: mechlin.probe_cognition(m, ds, pca_dim=0),
            OutOfRangeError,
            "pca_dim must be >= 1 or None, got 0",
        ),
        (
            "probe_cognition C 0",
            lambda: mechlin.probe_cognition(m, ds, C=0.0),
            ArgumentError,
            "C=0.0 must be a positive finite number",
        ),
        (
            "probe_cognition too few",
            lambda: mechlin.probe_cognition(m, ds.subset([0, 1])),
            EmptyInputError,
            "dataset 'arc_easy' has 2 item(s): a",
        ),
        (
            "score_options empty",
            lambda: mechlin.score_options(m, P, []),
            EmptyInputError,
            "options is empty: pass at least one",
        ),
        (
            "score_options batch 0",
            lambda: mechlin.score_options(m, P, ["a"], batch_size=0),
            ArgumentError,
            "batch_size=0 must be a positive",
        ),
        (
            "score_options bare str",
            lambda: mechlin.score_options(m, P, "Paris"),
            ArgumentTypeError,
            "options takes a list of items, not one",
        ),
        (
            "cve models empty",
            lambda: mechlin.cognition_vs_expression({}, ds),
            EmptyInputError,
            "models is empty: pass at least one",
        ),
        (
            "cve models list",
            lambda: mechlin.cognition_vs_expression([m], ds),
            ArgumentTypeError,
            "models must be a mapping (Mapping[str,",
        ),
        (
            "cve pass_k > n_samples",
            lambda: mechlin.cognition_vs_expression({"a": m}, ds, pass_k=(8,), n_samples=4),
            OutOfRangeError,
            "pass@k with k=8 needs at least k",
        ),
        (
            "cve shots empty",
            lambda: mechlin.cognition_vs_expression({"a": m}, ds, shots=()),
            EmptyInputError,
            "shots is empty: pass e.g. shots=(0,)",
        ),
        (
            "cve datasets empty",
            lambda: mechlin.cognition_vs_expression({"a": m}, []),
            EmptyInputError,
            "datasets is empty: pass at least one",
        ),
        (
            "tiny n_layers 0",
            lambda: mechlin.tiny_model(n_layers=0),
            ArgumentError,
            "n_layers=0 must be a positive integer",
        ),
        (
            "embedding_std subjects empty",
            lambda: mechlin.embedding_std(m, []),
            EmptyInputError,
            "no subjects given: embedding_std needs",
        ),
        (
            "dissect enrichment_window 0",
            lambda: mechlin.dissect_recall(m, [FACT], enrichment_window=0),
            EmptyInputError,
            "the model knows none of the 1 facts:",
        ),
        (
            "prompt int",
            lambda: mechlin.causal_trace(m, 123, S),
            ArgumentTypeError,
            "prompt=123 must be a string, not int",
        ),
        (
            "subject int",
            lambda: mechlin.causal_trace(m, P, 123),
            ArgumentTypeError,
            "subject=123 must be a string, not int",
        ),
        (
            "prompt empty",
            lambda: mechlin.causal_trace(m, "", S),
            SubjectNotFoundError,
            "subject 'Eiffel Tower' does not occur",
        ),
        (
            "subject empty",
            lambda: mechlin.causal_trace(m, P, ""),
            EmptyInputError,
            "the subject is empty; pass the",
        ),
        (
            "answer empty",
            lambda: mechlin.causal_trace(m, P, S, answer=""),
            EmptyInputError,
            "the answer is empty; pass the answer's",
        ),
        (
            "answer int",
            lambda: mechlin.causal_trace(m, P, S, answer=5),
            ArgumentTypeError,
            "answer=5 must be a string, not int",
        ),
        (
            "subject not in prompt",
            lambda: mechlin.find_subject_span(m, P, "Rome"),
            SubjectNotFoundError,
            "subject 'Rome' does not occur in the",
        ),
        (
            "knockout subject not in prompt",
            lambda: mechlin.attention_knockout(m, P, "Rome"),
            SubjectNotFoundError,
            "subject 'Rome' does not occur in the",
        ),
        (
            "ace facts empty",
            lambda: mechlin.average_causal_effects(m, []),
            EmptyInputError,
            "no facts given: pass a non-empty list",
        ),
        (
            "ace fact 1-tuple",
            lambda: mechlin.average_causal_effects(m, [(P,)]),
            ArgumentTypeError,
            "fact 0 is ('The Eiffel Tower is",
        ),
        (
            "ace fact 4-tuple",
            lambda: mechlin.average_causal_effects(m, [(P, S, "Paris", "x")]),
            ArgumentTypeError,
            "fact 0 is ('The Eiffel Tower is",
        ),
        (
            "ace fact dict no subject",
            lambda: mechlin.average_causal_effects(m, [{"prompt": P}]),
            ArgumentTypeError,
            "fact 0 lacks ['subject']:",
        ),
        (
            "tiny n_heads 3",
            lambda: mechlin.tiny_model(n_heads=3),
            ArgumentError,
            "d_model=64 must be a multiple of n_heads=3",
        ),
        (
            "unembed wrong width",
            lambda: mechlin.unembed(m, torch.zeros(5)),
            ArgumentError,
            "its last dimension must be the model's d_model (64)",
        ),
        (
            "ace fact int subject",
            lambda: mechlin.average_causal_effects(m, [(P, 5, "Paris")]),
            ArgumentTypeError,
            "fact 0 is ('The Eiffel Tower is",
        ),
        (
            "ace fact int answer",
            lambda: mechlin.average_causal_effects(m, [(P, S, 5)]),
            ArgumentTypeError,
            "fact 0 is ('The Eiffel Tower is",
        ),
        (
            "ace facts bare string",
            lambda: mechlin.average_causal_effects(m, P),
            ArgumentTypeError,
            "facts takes a list of items, not one",
        ),
        (
            "ace fact is a string",
            lambda: mechlin.average_causal_effects(m, [P]),
            ArgumentTypeError,
            "fact 0 is 'The Eiffel Tower is located",
        ),
        (
            "knockout_curves fact int subject",
            lambda: mechlin.knockout_curves(m, [(P, 5, "Paris")]),
            ArgumentTypeError,
            "fact 0 is ('The Eiffel Tower is",
        ),
        (
            "dissect facts empty",
            lambda: mechlin.dissect_recall(m, []),
            EmptyInputError,
            "no facts given: pass a non-empty list",
        ),
        (
            "extraction facts empty",
            lambda: mechlin.extraction_rates(m, []),
            EmptyInputError,
            "no facts given: pass a non-empty list",
        ),
        (
            "attributes list not mapping",
            lambda: mechlin.attributes_rate(m, [FACT], ["Paris"]),
            ArgumentTypeError,
            "attributes must be a mapping",
        ),
        (
            "attributes values bare string",
            lambda: mechlin.attributes_rate(m, [FACT], {S: "Paris"}),
            ArgumentTypeError,
            "attributes['Eiffel Tower'] = 'Paris'",
        ),
        (
            "attributes int value",
            lambda: mechlin.attributes_rate(m, [FACT], {S: [5]}),
            ArgumentTypeError,
            "attributes['Eiffel Tower'] = [5] must",
        ),
        (
            "attributes empty",
            lambda: mechlin.attributes_rate(m, [FACT], {}),
            EmptyInputError,
            "the attribute mapping is empty: pass",
        ),
        (
            "sublayer list not mapping",
            lambda: mechlin.sublayer_knockout_rate(m, [FACT], ["Paris"]),
            ArgumentTypeError,
            "attributes must be a mapping",
        ),
        (
            "concepts too few pairs",
            lambda: mechlin.concept_directions(m, {"x": [(5, 6)]}),
            TooFewPairsError,
            "concept 'x' has 1 usable pair(s) for",
        ),
        (
            "concepts 3-tuple pair",
            lambda: mechlin.concept_directions(
                m, {"x": [("the", "of", "a"), ("of", "is"), ("a", "in")]}
            ),
            ConceptPairError,
            "concept 'x': a pair must be (base,",
        ),
        (
            "concepts unknown name",
            lambda: mechlin.concept_directions(m, ["no such concept"]),
            ConceptPairError,
            "no shipped concept named 'no such",
        ),
        (
            "concepts bare string",
            lambda: mechlin.concept_directions(m, "male -> female"),
            ArgumentTypeError,
            "concepts takes a list of items, not",
        ),
        (
            "concepts pairs string",
            lambda: mechlin.concept_directions(m, {"x": "ab"}),
            ArgumentTypeError,
            "concepts['x'] = 'ab' must be",
        ),
        (
            "load_concepts bogus",
            lambda: mechlin.load_concepts(["bogus"]),
            ConceptPairError,
            "no shipped concept named 'bogus'.",
        ),
        (
            "residual one example",
            lambda: mechlin.residual_direction(m, ["a"], [0], layer=0),
            EmptyInputError,
            "label 0 has 1 example(s); the",
        ),
        (
            "residual labels length",
            lambda: mechlin.residual_direction(m, ["a b", "c d"], [0], layer=0),
            ArgumentError,
            "with labels, examples must be texts,",
        ),
        (
            "residual labels 0/2",
            lambda: mechlin.residual_direction(m, ["a b", "c d"], [0, 2], layer=0),
            ArgumentError,
            "labels must be 0 or 1, got [2]",
        ),
        (
            "residual no labels",
            lambda: mechlin.residual_direction(m, ["a b", "c d"], None, layer=0),
            ArgumentError,
            "without labels, examples must be",
        ),
        (
            "residual int examples",
            lambda: mechlin.residual_direction(m, [1, 2], [0, 1], layer=0),
            ArgumentError,
            "with labels, examples must be texts,",
        ),
        (
            "sparse_probe labels length",
            lambda: mechlin.sparse_probe(acts, labels[:10], k=1),
            ProbeInputError,
            "40 activation rows but 10 labels: one",
        ),
        (
            "sparse_probe nan acts",
            lambda: mechlin.sparse_probe(nan_acts, labels, k=1),
            ProbeInputError,
            "activations contain 1 NaN/inf values",
        ),
        (
            "sparse_probe one class",
            lambda: mechlin.sparse_probe(acts, torch.zeros(40, dtype=torch.long), k=1),
            ProbeInputError,
            "labels hold one class only ([0]): a",
        ),
        (
            "probe_sweep 1-d acts",
            lambda: mechlin.probe_sweep(acts[:, 0], labels),
            ProbeInputError,
            "activations must be [example, neuron],",
        ),
        (
            "classify datasets empty",
            lambda: mechlin.classify_neurons(m, [], broad_texts=["a"]),
            EmptyInputError,
            "datasets is empty: pass at least one",
        ),
        (
            "classify broad bare string",
            lambda: mechlin.classify_neurons(m, [word_ds()], broad_texts="hello"),
            ArgumentTypeError,
            "broad_texts takes a list of items, not",
        ),
        (
            "classify nan activations",
            nan_classify,
            ProbeInputError,
            "activations contain 3072 NaN/inf",
        ),
        (
            "collect empty",
            lambda: mechlin.collect_activations(m, []),
            EmptyInputError,
            "the dataset has no texts: pass at",
        ),
        (
            "collect unknown hook",
            lambda: mechlin.collect_activations(m, ["a"], hooks=["blocks.0.bogus"]),
            MissingHookError,
            "the model has no hook point",
        ),
        (
            "collect hook_q",
            lambda: mechlin.collect_activations(
                m, ["a b"], hooks=["blocks.0.attn.hook_q"], progress=False
            ),
            ArgumentError,
            "hook 'blocks.0.attn.hook_q' gives",
        ),
        (
            "collect int texts",
            lambda: mechlin.collect_activations(m, [5, 6]),
            ArgumentTypeError,
            "text 0 is a int, not a str",
        ),
        (
            "hook_name layer 99",
            lambda: mechlin.hook_name(m, "resid_post", 99),
            OutOfRangeError,
            "layer 99 is out of range: the model",
        ),
        (
            "hook_name no layer",
            lambda: mechlin.hook_name(m, "resid_post"),
            ArgumentError,
            "site 'resid_post' is per layer: pass",
        ),
        (
            "steering vector size",
            lambda: mechlin.steering_sweep(m, P, torch.zeros(5), pairs={"x": ("the", "of")}),
            ArgumentError,
            "the steering vector must have shape",
        ),
        (
            "steering pairs empty",
            lambda: mechlin.steering_sweep(m, P, torch.zeros(m.cfg.d_model), pairs={}),
            EmptyInputError,
            "pairs is empty: pass {concept: (base",
        ),
        (
            "steering pair 1-tuple",
            lambda: mechlin.steering_sweep(m, P, torch.zeros(m.cfg.d_model), pairs={"x": ("the",)}),
            ArgumentTypeError,
            "pairs['x'] = ('the',) must be",
        ),
        (
            "steering pair string",
            lambda: mechlin.steering_sweep(m, P, torch.zeros(m.cfg.d_model), pairs={"x": "the"}),
            ArgumentTypeError,
            "pairs['x'] = 'the' must be tuple[str,",
        ),
        (
            "steering vector nan",
            lambda: mechlin.steering_sweep(
                m, P, torch.full((m.cfg.d_model,), NAN), pairs={"x": ("the", "of")}
            ),
            ArgumentError,
            "the steering vector has non-finite",
        ),
        (
            "answer_token empty",
            lambda: mechlin.answer_token(m, ""),
            EmptyInputError,
            "the answer is empty; pass the answer's",
        ),
        (
            "answer_tokens empty",
            lambda: mechlin.answer_tokens(m, ""),
            EmptyInputError,
            "the answer is empty; pass the answer's",
        ),
        (
            "answer_token multi",
            lambda: mechlin.answer_token(m, " Paris Rome London Berlin"),
            MultiTokenAnswerError,
            "answer ' Paris Rome London Berlin' is",
        ),
        (
            "answer_token int",
            lambda: mechlin.answer_token(m, 5),
            ArgumentTypeError,
            "answer=5 must be a string, not int",
        ),
        (
            "separability unknown",
            lambda: mechlin.separability(m, dirs(), "x", "nope"),
            NotInResultError,
            "no concept 'nope' here; concepts:",
        ),
        (
            "orthogonality same kind",
            lambda: mechlin.orthogonality(dirs(), dirs()),
            ArgumentError,
            "pass the causal directions first and",
        ),
        (
            "interchange no pairs",
            lambda: mechlin.interchange_along(
                m,
                mechlin.residual_direction(m, ["a b", "c d", "a c", "c b"], [0, 1, 0, 1], layer=0),
                [],
                ("the", "of"),
            ),
            EmptyInputError,
            "no (base, source) pairs given",
        ),
        (
            "load_model unknown",
            lambda: mechlin.load_model("no-such-model-xyz"),
            UnknownModelError,
            "Cannot load model 'no-such-model-xyz':",
        ),
        (
            "load_model int",
            lambda: mechlin.load_model(5),
            ArgumentTypeError,
            "name=5 must be a string, not int",
        ),
        (
            "load_model whitespace",
            lambda: mechlin.load_model("   "),
            UnknownModelError,
            "Cannot load model '   ': the name is",
        ),
        (
            "load_model cuda:99",
            lambda: mechlin.load_model("smollm2-135m", device="cuda:99"),
            ArgumentError,
            "cuda:99",
        ),
        (
            "collect out is a file",
            lambda: mechlin.collect_activations(m, ["a b"], out=file_path, progress=False),
            StoreMismatchError,
            "is a file, not a directory: pass a directory",
        ),
        (
            "expression out is a file",
            lambda: mechlin.expression_scores(m, ds, out=file_path, progress=False),
            StoreMismatchError,
            "is a file, not a directory: pass a directory",
        ),
        (
            "probe_cognition out is a file",
            lambda: mechlin.probe_cognition(m, ds, out=file_path, progress=False),
            StoreMismatchError,
            "is a file, not a directory: pass a directory",
        ),
        (
            "cve out is a file",
            lambda: mechlin.cognition_vs_expression({"a": m}, ds, out=file_path, progress=False),
            StoreMismatchError,
            "is a file, not a directory: pass a directory",
        ),
        (
            "load list file",
            lambda: (torch.save([1, 2], tmp / "l.pt"), mechlin.CausalTrace.load(tmp / "l.pt")),
            ArgumentError,
            "holds a list of 2 item(s), a",
        ),
        (
            "load dict no kind",
            lambda: (torch.save({"a": 1}, tmp / "d.pt"), mechlin.CausalTrace.load(tmp / "d.pt")),
            ArgumentError,
            "holds a dict with keys ['a'], a",
        ),
        (
            "load text file",
            lambda: ((tmp / "x.pt").write_text("hello"), mechlin.CausalTrace.load(tmp / "x.pt")),
            ArgumentError,
            "is not a saved mechlin result",
        ),
        (
            "load missing file",
            lambda: mechlin.CausalTrace.load(tmp / "missing.pt"),
            ArgumentError,
            "does not exist (or is not a file)",
        ),
        (
            "load wrong kind",
            lambda: (
                mechlin.causal_trace(m, "Big Ben is in", "Big Ben", n_samples=1).save(tmp / "w.pt"),
                mechlin.KnockoutCurve.load(tmp / "w.pt"),
            ),
            ArgumentError,
            "holds a CausalTrace result, not a",
        ),
        (
            "load tampered nan",
            lambda: saved("nan", lambda d: d["scores"].fill_(NAN)),
            ArgumentError,
            "scores holds 21 NaN/inf value(s); a",
        ),
        (
            "load tampered type",
            lambda: saved("type", set_("scores", "not a tensor")),
            ArgumentError,
            "CausalTrace.scores holds a str ('not a",
        ),
        (
            "load tampered tuple",
            lambda: saved("tuple", set_("tokens", [1, 2])),
            ArgumentError,
            "CausalTrace.tokens holds a list of 2",
        ),
        (
            "load tampered int",
            lambda: saved("int", set_("n_samples", "ten")),
            ArgumentError,
            "CausalTrace.n_samples holds a str",
        ),
        (
            "load tampered dtype",
            lambda: saved("dtype", lambda d: d.__setitem__("scores", d["scores"].long())),
            ArgumentError,
            "CausalTrace.scores holds a tensor",
        ),
        (
            "load missing field",
            lambda: saved("missing", lambda d: d.pop("scores")),
            ArgumentError,
            "the saved CausalTrace lacks the",
        ),
        (
            "load token ids out of vocab",
            lambda: saved_dirs(lambda d: d["pair_ids"].fill_(10**6)),
            ArgumentError,
            "pair_ids holds token ids",
        ),
        (
            "load negative token ids",
            lambda: saved_dirs(lambda d: d["pair_ids"].fill_(-1)),
            ArgumentError,
            "pair_ids holds token ids -1..-1,",
        ),
        (
            "load steering token ids out of vocab",
            lambda: tampered(sweep(), "sweep", lambda d: d["token_ids"].fill_(10**6)),
            ArgumentError,
            "token_ids holds token ids 1000000..1000000, outside the model's vocabulary [0, 400)",
        ),
        (
            "load old steering negative token id",  # saved before d_vocab was recorded
            lambda: tampered(
                sweep(), "old-sweep", lambda d: (d.pop("d_vocab"), d["token_ids"].fill_(-1))
            ),
            ArgumentError,
            "token_ids holds token ids -1..-1; token ids are never negative",
        ),
        (
            "load separability pair ids out of vocab",
            lambda: tampered(
                mechlin.separability(m, dirs(), "x", "y"),
                "sep",
                lambda d: d["pair_ids"]["__tuple__"][1].fill_(400),
            ),
            ArgumentError,
            "pair_ids[1] holds token ids 400..400, outside the model's vocabulary [0, 400)",
        ),
        (
            "load trace negative answer_id",
            lambda: saved("answer_id", set_("answer_id", -5)),
            ArgumentError,
            "answer_id holds token id -5; token ids are never negative",
        ),
        (
            "load trace negative contrast_id",
            lambda: saved("contrast_id", set_("contrast_id", -1)),
            ArgumentError,
            "contrast_id holds token id -1; token ids are never negative",
        ),
        (
            "load knockout negative answer_id",
            lambda: tampered(
                mechlin.attention_knockout(m, P, S, window=1), "ko", set_("answer_id", -2)
            ),
            ArgumentError,
            "answer_id holds token id -2; token ids are never negative",
        ),
        (
            "concept not in result",
            lambda: dirs().index("nope"),
            NotInResultError,
            "no concept 'nope' here; concepts:",
        ),
    ]


@pytest.fixture
def without_jaxtyping():
    """The test run checks annotations with jaxtyping + beartype (pyproject's addopts); users'
    code does not, so the table checks what users get: mechlin's own errors."""
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", False)


def test_every_bad_input_gives_a_clear_error(tiny, tmp_path: Path, without_jaxtyping) -> None:
    failures = []
    cases = _cases(tiny, tmp_path) + _more_cases(tiny, tmp_path)
    names = [what for what, *_ in cases]
    assert len(set(names)) == len(names), "two rows share a name"
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


def test_results_with_valid_token_ids_load(tiny, tmp_path: Path) -> None:
    """The token-id check on load refuses tampered ids (the table), not the ids a run writes:
    every result class with token ids round-trips, also a steering sweep saved before it
    recorded ``d_vocab``."""
    sweep = mechlin.steering_sweep(
        tiny, P, torch.zeros(tiny.cfg.d_model), pairs={"x": ("the", "of")}, alphas=[0.0, 1.0]
    )
    assert sweep.d_vocab == tiny.cfg.d_vocab
    again = mechlin.SteeringSweep.load(sweep.save(tmp_path / "sweep.pt"))
    assert torch.equal(again.token_ids, sweep.token_ids) and again.d_vocab == sweep.d_vocab
    data = torch.load(tmp_path / "sweep.pt", weights_only=True)
    del data["d_vocab"]
    torch.save(data, tmp_path / "old.pt")
    assert mechlin.SteeringSweep.load(tmp_path / "old.pt").d_vocab is None
    pairs = {"x": [(5, 6), (7, 8), (9, 10)], "y": [(11, 12), (13, 14), (399, 398)]}
    sep = mechlin.separability(tiny, mechlin.concept_directions(tiny, pairs), "x", "y")
    loaded = mechlin.Separability.load(sep.save(tmp_path / "sep.pt"))
    assert int(loaded.pair_ids[1].max()) == 399  # the last token of the vocabulary is kept
    trace = mechlin.causal_trace(tiny, "Big Ben is in", "Big Ben", n_samples=1, metric="logit_diff")
    assert mechlin.CausalTrace.load(trace.save(tmp_path / "t.pt")).contrast_id == trace.contrast_id
    curve = mechlin.attention_knockout(tiny, P, S, window=1)
    assert mechlin.KnockoutCurve.load(curve.save(tmp_path / "k.pt")).answer_id == curve.answer_id


def test_counts_accepted_by_design(tiny) -> None:
    """``top_k`` beyond the vocabulary reads all of it (the default 500 on the 400-token tiny
    vocabulary) and the result says so; ``keep == top_k`` keeps every surviving token;
    ``top_heads(k)`` with more heads asked than there are ranks them all."""
    everything = mechlin.attributes_rate(tiny, [FACT], ATTR, top_k=10**6, progress=False)
    default = mechlin.attributes_rate(tiny, [FACT], ATTR, progress=False)
    assert everything.top_k == default.top_k == tiny.cfg.d_vocab
    assert torch.equal(everything.rate, default.rate)
    assert mechlin.attributes_rate(tiny, [FACT], ATTR, top_k=20, keep=20, progress=False).keep == 20
    rates = mechlin.extraction_rates(tiny, [(P, S)], progress=False)
    n_heads = tiny.cfg.n_layers * tiny.cfg.n_heads
    assert len(rates.top_heads(10 * n_heads)) == n_heads
