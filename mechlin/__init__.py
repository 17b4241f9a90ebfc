"""mechlin: mechanistic interpretability of language models, on TransformerLens."""

from mechlin.attributes import (
    AttributesRate,
    SublayerKnockout,
    attributes_rate,
    sublayer_knockout_rate,
)
from mechlin.causal_effects import AverageCausalEffects, average_causal_effects
from mechlin.causal_trace import CausalTrace, causal_trace, embedding_std
from mechlin.dissect import RecallDissection, dissect_recall
from mechlin.errors import (
    EmptyInputError,
    MechlinError,
    MissingHookError,
    MissingModelPackageError,
    MultiTokenAnswerError,
    SubjectNotFoundError,
    UnknownModelError,
)
from mechlin.extraction import ExtractionRates, extraction_rates
from mechlin.knockout import KnockoutCurve, KnockoutCurves, attention_knockout, knockout_curves
from mechlin.models import BUNDLED_MODELS, load_hf_model, load_model
from mechlin.sites import hook_name, hook_names, unembed
from mechlin.tiny import tiny_model
from mechlin.tokens import answer_token, answer_tokens, find_subject_span

__all__ = [
    "BUNDLED_MODELS",
    "AttributesRate",
    "AverageCausalEffects",
    "CausalTrace",
    "EmptyInputError",
    "ExtractionRates",
    "KnockoutCurve",
    "KnockoutCurves",
    "MechlinError",
    "MissingHookError",
    "MissingModelPackageError",
    "MultiTokenAnswerError",
    "RecallDissection",
    "SubjectNotFoundError",
    "SublayerKnockout",
    "UnknownModelError",
    "answer_token",
    "answer_tokens",
    "attention_knockout",
    "attributes_rate",
    "average_causal_effects",
    "causal_trace",
    "dissect_recall",
    "embedding_std",
    "extraction_rates",
    "find_subject_span",
    "hook_name",
    "hook_names",
    "knockout_curves",
    "load_hf_model",
    "load_model",
    "sublayer_knockout_rate",
    "tiny_model",
    "unembed",
]
