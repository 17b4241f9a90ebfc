"""Cognition vs expression (Yan et al. 2024): what hidden states know vs what a model says.

``probe_cognition`` reads the *cognitive* capability of a model on a multiple-choice set: a
linear probe per layer for the right answer, scored on held-out items beside chance and a
shuffled-label control. ``expression_scores`` reads the *expressive* capability: the model's own
answers, scored the lm-evaluation-harness way (option log-likelihoods, ``acc`` / ``acc_norm``),
by letter, by greedy letter generation and by pass@k of sampled letters, with few-shot prompts;
``score_options`` and ``pass_at_k`` are its primitives. ``cognition_vs_expression`` measures both
over several models or checkpoints and correlates them; ``finetune_letters`` makes an offline
checkpoint series by short supervised fine-tuning on letter answers (the negative control).

The phase series at real scale: ``sft_lora`` (LoRA on every layer, mixed data from
``sft_examples``) then ``dpo_tune`` (TRL's DPO on ``dpo_pairs``), merged checkpoints that
``mechlin.load_model`` reads. Honest statistics in ``mechlin.cognition.stats``: pools disjoint
from the evaluated sets (``disjoint_pool``), cross-fitted probes at a layer fixed in advance
(``crossfit_cognition``), paired phase differences (``paired_delta``) and a correlation tested
within datasets (``stratified_permutation_corr``); the paper's views (``pca_grid``,
``umap_view``, ``curves_vs_step``). ``scripts/reproduce_yan2024.py`` runs the whole series.
"""

from mechlin.cognition.comparison import CognitionExpression, cognition_vs_expression
from mechlin.cognition.expression import (
    ExpressionScores,
    encode_continuation,
    expression_scores,
    pass_at_k,
    score_options,
)
from mechlin.cognition.finetuning import FineTuneRun, finetune_letters
from mechlin.cognition.phases import (
    DPOPair,
    PhaseRun,
    SFTExample,
    dpo_loss_by_hand,
    dpo_pairs,
    dpo_tune,
    sft_examples,
    sft_lora,
)
from mechlin.cognition.probes import CognitionProbe, probe_cognition
from mechlin.cognition.prompts import cloze_context, cloze_options, letter_options, letter_prompt
from mechlin.cognition.stats import (
    CrossFit,
    DisjointReport,
    PairedDelta,
    StratifiedCorrelation,
    assert_disjoint,
    bootstrap_ci,
    crossfit_cognition,
    curves_vs_step,
    disjoint_pool,
    paired_delta,
    pca_grid,
    stratified_permutation_corr,
    umap_view,
)

__all__ = [
    "CognitionExpression",
    "CognitionProbe",
    "CrossFit",
    "DPOPair",
    "DisjointReport",
    "ExpressionScores",
    "FineTuneRun",
    "PairedDelta",
    "PhaseRun",
    "SFTExample",
    "StratifiedCorrelation",
    "assert_disjoint",
    "bootstrap_ci",
    "cloze_context",
    "cloze_options",
    "cognition_vs_expression",
    "crossfit_cognition",
    "curves_vs_step",
    "disjoint_pool",
    "dpo_loss_by_hand",
    "dpo_pairs",
    "dpo_tune",
    "encode_continuation",
    "expression_scores",
    "finetune_letters",
    "letter_options",
    "letter_prompt",
    "paired_delta",
    "pass_at_k",
    "pca_grid",
    "probe_cognition",
    "score_options",
    "sft_examples",
    "sft_lora",
    "stratified_permutation_corr",
    "umap_view",
]
