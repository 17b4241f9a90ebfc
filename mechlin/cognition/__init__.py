"""Cognition vs expression (Yan et al. 2024): what hidden states know vs what a model says.

``probe_cognition`` reads the *cognitive* capability of a model on a multiple-choice set: a
linear probe per layer for the right answer, scored on held-out items beside chance and a
shuffled-label control. ``expression_scores`` reads the *expressive* capability: the model's own
answers, scored the lm-evaluation-harness way (option log-likelihoods, ``acc`` / ``acc_norm``),
by letter, by greedy letter generation and by pass@k of sampled letters, with few-shot prompts;
``score_options`` and ``pass_at_k`` are its primitives. ``cognition_vs_expression`` measures both
over several models or checkpoints and correlates them; ``finetune_letters`` makes an offline
checkpoint series by short supervised fine-tuning on letter answers.
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
from mechlin.cognition.probes import CognitionProbe, probe_cognition
from mechlin.cognition.prompts import cloze_context, cloze_options, letter_options, letter_prompt

__all__ = [
    "CognitionExpression",
    "CognitionProbe",
    "ExpressionScores",
    "FineTuneRun",
    "cloze_context",
    "cloze_options",
    "cognition_vs_expression",
    "encode_continuation",
    "expression_scores",
    "finetune_letters",
    "letter_options",
    "letter_prompt",
    "pass_at_k",
    "probe_cognition",
    "score_options",
]
