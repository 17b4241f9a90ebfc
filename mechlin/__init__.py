"""mechlin: mechanistic interpretability of language models, on TransformerLens."""

from mechlin.causal_effects import AverageCausalEffects, average_causal_effects
from mechlin.causal_trace import CausalTrace, causal_trace, embedding_std
from mechlin.errors import (
    EmptyInputError,
    MechlinError,
    MissingHookError,
    MissingModelPackageError,
    MultiTokenAnswerError,
    SubjectNotFoundError,
    UnknownModelError,
)
from mechlin.models import BUNDLED_MODELS, load_hf_model, load_model
from mechlin.sites import hook_name, hook_names, unembed
from mechlin.tiny import tiny_model
from mechlin.tokens import answer_token, answer_tokens, find_subject_span

__all__ = [
    "BUNDLED_MODELS",
    "AverageCausalEffects",
    "CausalTrace",
    "EmptyInputError",
    "MechlinError",
    "MissingHookError",
    "MissingModelPackageError",
    "MultiTokenAnswerError",
    "SubjectNotFoundError",
    "UnknownModelError",
    "answer_token",
    "answer_tokens",
    "average_causal_effects",
    "causal_trace",
    "embedding_std",
    "find_subject_span",
    "hook_name",
    "hook_names",
    "load_hf_model",
    "load_model",
    "tiny_model",
    "unembed",
]
