"""Which neurons encode a feature: sparse probing (Gurnee et al. 2023).

``collect_activations`` reads ``[example, neuron]`` matrices over a text dataset (batched,
resumable on disk); ``sparse_probe`` and ``probe_sweep`` fit k-sparse probes with six ways of
choosing the neurons, optimal sparse probing among them; ``classify_neurons`` turns the probes
into per-feature verdicts (monosemantic candidate, superposition, distributed, polysemantic
neurons) with the evidence behind each. Toy models of superposition (Elhage et al. 2022) and
feature capacity (Scherlis et al. 2022) show why: ``toy_superposition`` trains the toy,
``superposition_sweep`` draws the phase diagram over sparsity and importance and the capacity
allocation of features by importance.
"""

from mechlin.neurons.activations import NeuronActivations, collect_activations
from mechlin.neurons.capacity_sweep import (
    CapacityAllocation,
    PhaseDiagram,
    SuperpositionSweep,
    capacity_allocation,
    phase_diagram,
    superposition_sweep,
)
from mechlin.neurons.probing import ProbeSweep, SparseProbeResult, probe_sweep, sparse_probe
from mechlin.neurons.superposition import (
    ToyNeurons,
    ToySuperposition,
    feature_measures,
    neuron_shares,
    toy_superposition,
)
from mechlin.neurons.verdicts import (
    FeatureVerdict,
    NeuronReport,
    PolysemanticNeuron,
    classify_neurons,
    neuron_activations_html,
    top_activating_tokens,
)

__all__ = [
    "CapacityAllocation",
    "FeatureVerdict",
    "NeuronActivations",
    "NeuronReport",
    "PhaseDiagram",
    "PolysemanticNeuron",
    "ProbeSweep",
    "SparseProbeResult",
    "SuperpositionSweep",
    "ToyNeurons",
    "ToySuperposition",
    "capacity_allocation",
    "classify_neurons",
    "collect_activations",
    "feature_measures",
    "neuron_activations_html",
    "neuron_shares",
    "phase_diagram",
    "probe_sweep",
    "sparse_probe",
    "superposition_sweep",
    "top_activating_tokens",
    "toy_superposition",
]
