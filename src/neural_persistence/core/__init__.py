"""The numpy + numba engine: weights in, persistence diagrams and neural persistence out."""

from .compute import NamedMatrix, compute, layer_diagram, layer_tree, named_matrices
from .measures import diagram_from_tree, normalized_np
from .results import LayerResult, NetworkResult, PersistenceDiagram
from .spanning_tree import NonFiniteWeightsError, TreeValues, tree_values
from .weights import BFloat16Bits, bfloat16_bits, to_keys

__all__ = [
    "BFloat16Bits",
    "LayerResult",
    "NamedMatrix",
    "NetworkResult",
    "NonFiniteWeightsError",
    "PersistenceDiagram",
    "TreeValues",
    "bfloat16_bits",
    "compute",
    "diagram_from_tree",
    "layer_diagram",
    "layer_tree",
    "named_matrices",
    "normalized_np",
    "to_keys",
    "tree_values",
]
