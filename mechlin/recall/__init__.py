"""How facts are recalled: where a fact lives and how it reaches the answer.

ROME's causal tracing (``causal_trace``, ``average_causal_effects``) finds the (layer, token)
states that carry a fact; attribution patching estimates every cell at once
(``attribution_patch``) and ``adaptive_trace`` restores exactly only the cells it ranks
highest, with the estimate's measured error. Geva et al.'s dissection follows the fact:
relation propagation by attention knockout (``attention_knockout``, ``knockout_curves``),
attribute extraction by the attention and MLP sublayers and heads (``extraction_rates``),
subject enrichment of the hidden states (``attributes_rate``, ``sublayer_knockout_rate``), and
the whole account in one call with an HTML report (``dissect_recall``). ``answer_lens`` reads
one answer through the logit lens.
"""

from mechlin.recall.adaptive import AdaptiveTrace, adaptive_trace
from mechlin.recall.attribution import AttributionTrace, attribution_patch
from mechlin.recall.causal_effects import AverageCausalEffects, average_causal_effects
from mechlin.recall.dissection import RecallDissection, dissect_recall
from mechlin.recall.enrichment import (
    AttributesRate,
    SublayerKnockout,
    attributes_rate,
    sublayer_knockout_rate,
)
from mechlin.recall.extraction import ExtractionRates, extraction_rates
from mechlin.recall.knockout import (
    KnockoutCurve,
    KnockoutCurves,
    attention_knockout,
    knockout_curves,
)
from mechlin.recall.lens import AnswerLens, answer_lens
from mechlin.recall.tracing import CausalTrace, causal_trace, embedding_std

__all__ = [
    "AdaptiveTrace",
    "AnswerLens",
    "AttributesRate",
    "AttributionTrace",
    "AverageCausalEffects",
    "CausalTrace",
    "ExtractionRates",
    "KnockoutCurve",
    "KnockoutCurves",
    "RecallDissection",
    "SublayerKnockout",
    "adaptive_trace",
    "answer_lens",
    "attention_knockout",
    "attributes_rate",
    "attribution_patch",
    "average_causal_effects",
    "causal_trace",
    "dissect_recall",
    "embedding_std",
    "extraction_rates",
    "knockout_curves",
    "sublayer_knockout_rate",
]
