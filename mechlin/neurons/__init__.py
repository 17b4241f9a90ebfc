"""Which neurons encode a feature: sparse probing (Gurnee et al. 2023).

``collect_activations`` reads ``[example, neuron]`` matrices over a text dataset (batched,
resumable on disk); ``sparse_probe`` and ``probe_sweep`` fit k-sparse probes with six ways of
choosing the neurons, optimal sparse probing among them; ``classify_neurons`` turns the probes
into per-feature verdicts (monosemantic candidate, superposition, distributed, polysemantic
neurons) with the evidence behind each.
"""

from mechlin.neurons.activations import NeuronActivations, collect_activations
from mechlin.neurons.probing import ProbeSweep, SparseProbeResult, probe_sweep, sparse_probe
from mechlin.neurons.verdicts import (
    FeatureVerdict,
    NeuronReport,
    PolysemanticNeuron,
    classify_neurons,
    neuron_activations_html,
    top_activating_tokens,
)

__all__ = [
    "FeatureVerdict",
    "NeuronActivations",
    "NeuronReport",
    "PolysemanticNeuron",
    "ProbeSweep",
    "SparseProbeResult",
    "classify_neurons",
    "collect_activations",
    "neuron_activations_html",
    "probe_sweep",
    "sparse_probe",
    "top_activating_tokens",
]
