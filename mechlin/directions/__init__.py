"""Which directions carry a concept: linear representations (Park, Choe & Veitch 2024).

``concept_directions`` estimates unit concept directions in unembedding space under the causal
(or Euclidean) inner product from counterfactual word pairs; ``linearity_test``,
``orthogonality`` and ``separability`` test them; ``residual_direction`` finds a concept's
direction at any layer from labelled texts, ``interchange_along`` checks that the model uses it,
and ``steer`` / ``steering_sweep`` add a direction while the model runs.
"""

from mechlin.directions.concepts import ConceptDirections, concept_directions
from mechlin.directions.interchange import Interchange, interchange_along
from mechlin.directions.measures import (
    LinearityTest,
    Orthogonality,
    Separability,
    linearity_test,
    orthogonality,
    separability,
)
from mechlin.directions.residual import ResidualDirection, residual_direction
from mechlin.directions.steering import SteeringSweep, steer, steering_sweep

__all__ = [
    "ConceptDirections",
    "Interchange",
    "LinearityTest",
    "Orthogonality",
    "ResidualDirection",
    "Separability",
    "SteeringSweep",
    "concept_directions",
    "interchange_along",
    "linearity_test",
    "orthogonality",
    "residual_direction",
    "separability",
    "steer",
    "steering_sweep",
]
