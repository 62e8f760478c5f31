"""neural-persistence: the topology of neural networks from their weights alone.

Rieck et al., "Neural Persistence: A Complexity Measure for Deep Neural Networks Using Algebraic Topology",
ICLR 2019. Importing this package loads numpy and numba only; torch, pandas, matplotlib and dask are imported by
the features that need them.
"""

from .core import (
    BFloat16Bits,
    LayerResult,
    NamedMatrix,
    NetworkResult,
    NonFiniteWeightsError,
    PersistenceDiagram,
    TreeValues,
    bfloat16_bits,
    layer_diagram,
    layer_tree,
)
from .analysis import analyze, change_summary, load_table, trajectory
from .core.bias import with_bias
from .measure import compute, deep_graph_persistence
from .sources.torch_modules import LayerEntry, layers_of
from .training.early_stopping import Check, EarlyStopping, first_stop, stopping_decision

__version__ = "0.1.0"

__all__ = [
    "BFloat16Bits",
    "Check",
    "EarlyStopping",
    "LayerEntry",
    "LayerResult",
    "NamedMatrix",
    "NetworkResult",
    "NonFiniteWeightsError",
    "PersistenceDiagram",
    "TreeValues",
    "__version__",
    "analyze",
    "change_summary",
    "load_table",
    "trajectory",
    "bfloat16_bits",
    "compute",
    "deep_graph_persistence",
    "first_stop",
    "layer_diagram",
    "layer_tree",
    "layers_of",
    "stopping_decision",
    "with_bias",
]
