"""mechlin: mechanistic interpretability of language models, on TransformerLens."""

from mechlin.activations import NeuronActivations, collect_activations
from mechlin.attributes import (
    AttributesRate,
    SublayerKnockout,
    attributes_rate,
    sublayer_knockout_rate,
)
from mechlin.causal_effects import AverageCausalEffects, average_causal_effects
from mechlin.causal_trace import CausalTrace, causal_trace, embedding_std
from mechlin.concept_tests import (
    LinearityTest,
    Orthogonality,
    Separability,
    linearity_test,
    orthogonality,
    separability,
)
from mechlin.concepts import ConceptDirections, ConceptPairError, concept_directions, load_concepts
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
from mechlin.feature_data import FeatureDataset
from mechlin.knockout import KnockoutCurve, KnockoutCurves, attention_knockout, knockout_curves
from mechlin.models import BUNDLED_MODELS, load_hf_model, load_model
from mechlin.neurons import FeatureVerdict, NeuronReport, classify_neurons
from mechlin.residual_directions import (
    Interchange,
    ResidualDirection,
    interchange_along,
    residual_direction,
)
from mechlin.sites import hook_name, hook_names, unembed
from mechlin.sparse_probe import ProbeSweep, SparseProbeResult, probe_sweep, sparse_probe
from mechlin.steering import SteeringSweep, steer, steering_sweep
from mechlin.tiny import tiny_model
from mechlin.tokens import answer_token, answer_tokens, find_subject_span

__all__ = [
    "BUNDLED_MODELS",
    "AttributesRate",
    "AverageCausalEffects",
    "CausalTrace",
    "ConceptDirections",
    "ConceptPairError",
    "EmptyInputError",
    "ExtractionRates",
    "FeatureDataset",
    "FeatureVerdict",
    "Interchange",
    "KnockoutCurve",
    "KnockoutCurves",
    "LinearityTest",
    "MechlinError",
    "MissingHookError",
    "MissingModelPackageError",
    "MultiTokenAnswerError",
    "NeuronActivations",
    "NeuronReport",
    "Orthogonality",
    "ProbeSweep",
    "RecallDissection",
    "ResidualDirection",
    "Separability",
    "SparseProbeResult",
    "SteeringSweep",
    "SubjectNotFoundError",
    "SublayerKnockout",
    "UnknownModelError",
    "answer_token",
    "answer_tokens",
    "attention_knockout",
    "attributes_rate",
    "average_causal_effects",
    "causal_trace",
    "classify_neurons",
    "collect_activations",
    "concept_directions",
    "dissect_recall",
    "embedding_std",
    "extraction_rates",
    "find_subject_span",
    "hook_name",
    "hook_names",
    "interchange_along",
    "knockout_curves",
    "linearity_test",
    "load_concepts",
    "load_hf_model",
    "load_model",
    "orthogonality",
    "probe_sweep",
    "residual_direction",
    "separability",
    "sparse_probe",
    "steer",
    "steering_sweep",
    "sublayer_knockout_rate",
    "tiny_model",
    "unembed",
]
