"""paramcalc: a model's shapes, parameters, FLOPs and pitfalls, before you build or train it.

>>> import paramcalc
>>> model = paramcalc.Sequential(
...     [paramcalc.Dense(300, activation="relu"), paramcalc.Flatten(), paramcalc.Dense(1)],
...     input_shape=("n", 1))
>>> est = paramcalc.estimate(model)
>>> est.params
Sym('300*n + 601')
>>> est.subs(n=100).params
30601

``import paramcalc`` imports no framework: Keras and torch are used only when you hand in their models.
"""

from paramcalc.analysis.estimate import Assumption, Estimate, LayerRow, estimate
from paramcalc.analysis.seed import SEED_VARIANTS, seed_model
from paramcalc.core.dims import Dim, Sym, symbol
from paramcalc.core.errors import (
                     DimensionError,
                     LayerConfigError,
                     ParamcalcError,
                     ShapeError,
                     SpecError,
                     UnknownLayerError,
)
from paramcalc.core.graph import Graph, GraphNode, Sequential
from paramcalc.core.registry import (
                     layer_kinds,
                     register_keras_layer,
                     register_layer,
                     register_torch_module,
)
from paramcalc.core.spec import TensorSpec
from paramcalc.cost.capacity import largest_fitting, parse_bytes
from paramcalc.cost.devices import DeviceProfile
from paramcalc.cost.memory import MemoryBreakdown
from paramcalc.cost.parallel import Collective, Parallel
from paramcalc.cost.training import TrainingCost, training_cost
from paramcalc.layers import *  # noqa: F401,F403  (every built-in kind, e.g. paramcalc.Dense)
from paramcalc.layers import __all__ as _layer_names

__version__ = "0.1.0"

__all__ = [
    "Assumption", "DeviceProfile", "MemoryBreakdown", "TrainingCost", "largest_fitting", "parse_bytes",
    "Parallel", "Collective",
    "training_cost", "Dim", "DimensionError", "Estimate", "Graph", "GraphNode", "LayerConfigError",
    "LayerRow", "ParamcalcError", "SEED_VARIANTS", "Sequential", "ShapeError", "SpecError", "Sym",
    "TensorSpec", "UnknownLayerError", "estimate", "layer_kinds", "register_keras_layer",
    "register_layer", "register_torch_module", "seed_model", "symbol", *_layer_names,
]
