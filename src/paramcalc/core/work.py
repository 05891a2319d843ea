"""What one layer call does, in words the cost model prices without knowing the layer's kind.

Each kind describes its call once (``Layer.work(call)`` and ``Layer.saved(call, rules)``): the matrix
products with a weight and between activations, the per-element kernels, the memory passes, the host
operations it launches, attention cores and recurrent stacks timed whole where a device measured them,
what autograd keeps for its backward under each framework's rules. FLOPs by phase, training memory and
step time read these descriptions (``paramcalc.cost``); a user's kind
registered with ``register_layer`` is priced the same way once it describes its own work.

``call`` is the estimate's row of the call: its ``name``, ``input_shapes`` and ``output_shape`` (batch
axis first), ``inbound`` references, ``weights`` and ``layer``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from paramcalc.core.dims import Dim, prod

# Bytes per element (in units of the activation dtype's size) a per-element kernel moves when the device
# did not calibrate it: read and write; a norm makes three such passes.
FALLBACK_BYTES = {"relu": 2, "tanh": 2, "dropout": 2, "softmax": 2, "layer_norm": 6, "batch_norm": 6,
                  "pass": 2}  # "pass": a plain read and write, which no profile times apart
# A kernel a profile calibrated before it was measured apart is timed as the one it was priced as then:
# tanh as a ReLU-like pass (on CPUs it runs several times slower per element than ReLU, GELU or SiLU)
STAND_INS = {"tanh": "relu"}


@dataclass(frozen=True)
class Kernel:
    """A per-element kernel a device profile may have timed (``name``: "relu", "tanh", "softmax",
    "dropout", "batch_norm", "layer_norm", "max_pool", "avg_pool") over ``elements``; where the profile
    did not, the ``stand_in`` kernel's time, else a memory pass of ``fallback_bytes`` per element, in units
    of the activation dtype's size."""

    name: str
    elements: Dim
    fallback_bytes: float
    stand_in: str | None = None


def kernel(name: str, elements: Dim) -> Kernel:
    return Kernel(name, elements, FALLBACK_BYTES[name], STAND_INS.get(name))


@dataclass(frozen=True)
class AttentionCore:
    """Attention between projections: scores, softmax, dropout on the probabilities, weighted values."""

    batch_heads: Dim
    query: Dim
    key: Dim
    head_dim: Dim
    value_dim: Dim
    dropout: bool

    def products(self) -> list:
        return [(self.batch_heads * self.query, self.head_dim, self.key),
                (self.batch_heads * self.query, self.key, self.value_dim)]

    def kernels(self) -> list:
        scores = self.batch_heads * self.query * self.key
        return [kernel("softmax", scores)] + ([kernel("dropout", scores)] if self.dropout else [])


@dataclass(frozen=True)
class RecurrentWork:
    """A recurrent stack: ``layers`` layers of ``directions`` directions, each stepping ``steps`` times over
    ``batch`` sequences with ``gates`` gates of ``units`` units; the first reads ``features`` per step."""

    cell: str
    gates: int
    batch: Dim
    steps: Dim
    features: Dim
    units: Dim
    layers: int
    directions: int
    projection: Dim = 0  # an LSTM's proj_size: each step's output projected to this width (0: none)

    @property
    def output_width(self) -> Dim:
        """What each direction hands the next step and the next layer."""
        return self.projection or self.units

    def step_work(self, features: Dim) -> Dim:
        """FLOPs of one step of one direction of a layer reading ``features``: its gates' products with
        the input and the previous output, and the projection."""
        return 2 * self.batch * ((features + self.output_width) * self.gates * self.units
                                 + self.units * self.projection)

    def layer_inputs(self) -> list:
        """The features each layer of the stack reads per step."""
        return [self.features] + [self.directions * self.output_width] * (self.layers - 1)

    @property
    def units_per_layer(self) -> Dim:
        """Batch x steps x directions x units of one layer: what its kept tensors scale with."""
        return self.batch * self.steps * self.directions * self.units


@dataclass(frozen=True)
class Work:
    """One layer call's work for the whole batch.

    - ``weight_products``: (m, k, n) forward products with a weight; the backward makes the input
      gradient (m, n, k) where the input needs one and the weight gradient where the weight trains.
    - ``state_products``: (m, k, n) products of a weight with the layer's own state (a recurrence): as
      weight products, but their input gradient (the state's, step to step) is made whenever the backward
      runs through the layer, for its weight gradients too, not only where its input needs one.
    - ``activation_products``: (m, k, n) products between two activations, timed twice more backward;
      ``activation_macs``: their multiply-adds, as the FLOPs by phase count them.
    - ``kernels``: per-element kernels; ``memory_elements``: elements moved by other memory-bound passes
      (read and written, in units of the activation dtype).
    - ``host_ops``: framework operations the forward launches (each costs the host its dispatch).
    - ``attention``: attention cores between projections; ``recurrent``: a recurrent stack; ``conv``:
      the (positions, inputs per output, filters) product of a dense 2-D convolution. Each is timed
      whole where the device profile measured such layers.
    - ``bias_elements``: a trained bias's gradient reads this many output-gradient elements.
    - ``has_bias``: the call adds a bias; ``fused_bias``: it is added inside the product's kernel (Keras on torch adds it apart);
      ``fused_activation``: the activation the layer applies itself (Keras' ``activation=``).
    - ``autocast_casts``: (elements, trained) of each weight tensor torch's autocast casts to 16 bits
      before the products; ``keeps_weight_casts``: the backward reads those copies whatever the input
      needs (recurrent and attention layers' gradients through their own products).
    - ``device_free``: no device work (views, reading a parameter); ``aliases_input``: the output is the
      input's storage; ``float_inputs``: the inputs are floating tensors (autocast copies them);
      ``is_weight``: the output is a parameter or buffer the model holds, so a backward that keeps it
      (or a view of it) costs no memory beyond the weights; ``writes_input``: the output was written
      into the input's storage (an in-place operation): nothing new is allocated, and a tensor kept of
      either is one; ``no_gradient``: its output carries no gradient whatever it reads (a tensor made
      without autograd: a dropout's noise, a comparison's booleans), so it has no backward and no
      gradient flows through it.
    - ``family``: the name device calibrations file this layer's measurements under (host cost per
      layer, layers timed whole); ``host_repeats``: how many such layers the call holds.
    """

    weight_products: tuple = ()
    state_products: tuple = ()
    activation_products: tuple = ()
    activation_macs: Dim = 0
    kernels: tuple = ()
    memory_elements: Dim = 0
    host_ops: float = 1
    attention: tuple = ()
    recurrent: RecurrentWork | None = None
    conv: tuple | None = None
    bias_elements: Dim = 0
    has_bias: bool = False
    fused_bias: bool = False
    fused_activation: str | None = None
    autocast_casts: tuple = ()
    keeps_weight_casts: bool = False
    device_free: bool = False
    aliases_input: bool = False
    is_weight: bool = False
    writes_input: bool = False
    no_gradient: bool = False
    float_inputs: bool = True
    family: str = ""
    host_repeats: int = 1


@dataclass(frozen=True)
class SavingRules:
    """Whose rules decide what a layer keeps for its backward: ``framework`` "torch" (autograd), "keras"
    (Keras compiling the step: TensorFlow's registered gradients) or "keras-torch" (Keras' own operations
    on torch's autograd); ``activation_bytes`` per element; ``mixed`` precision; ``cpu``: the device is a
    CPU; ``measured``: what the device's calibration found recurrent and Transformer kernels keep, by
    table ("recurrent_saved", "recurrent_workspace", "transformer_saved")."""

    framework: str = "torch"
    activation_bytes: int = 4
    mixed: bool = False
    cpu: bool = False
    measured: dict = field(default_factory=dict)

    @property
    def tensorflow(self) -> bool:
        return self.framework == "keras"


def inputs_kept(call, rules: SavingRules) -> list:
    """(tensor key, bytes) of each input of a call, keyed by the tensor it reads."""
    return [((src, index), prod(shape) * rules.activation_bytes)
            for (src, index), shape in zip(call.inbound, call.input_shapes)]


def output_kept(call, rules: SavingRules, part: object = 0) -> list:
    """(tensor key, bytes) of a tensor of the output's size that the call makes (``part`` names it)."""
    return [((call.name, part), prod(call.output_shape) * rules.activation_bytes)]


def whole_bytes(measured: float) -> int:
    """A calibrated figure in bytes per element as whole bytes: sizes stay exact integers, and a formula
    in the batch gives what a concrete batch gives."""
    return round(measured)


# A Transformer layer's LayerNorms run in 32 bits under autocast (its float32 list): their weights stay
# as they are. torch's bias_k and bias_v join the projections by concatenation: promoted, not cast.
_UNCAST_WEIGHT = re.compile(r"(^|\.)norm\d*\.|(bias_k|bias_v)$")


def weight_casts(call, tensor_of: Callable[[str], str] = lambda name: name) -> tuple:
    """(elements, trained) of each weight tensor torch's autocast casts to 16 bits for one call of a layer
    whose products run in 16 bits; ``tensor_of`` names the tensor a weight lives in where torch packs
    several (attention's in_proj_weight)."""
    tensors: dict = {}
    for w in call.weights:
        if w.buffer or _UNCAST_WEIGHT.search(w.name):
            continue
        entry = tensors.setdefault(tensor_of(w.name), [0, False])
        entry[0] += prod(w.shape)
        entry[1] = entry[1] or call.layer.trains(w)
    return tuple(tuple(entry) for entry in tensors.values())
