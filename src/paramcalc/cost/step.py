"""One training step of an estimated model, as the cost model reads it: the precision and optimizer it
trains with, the framework whose step it is, the device profile, which calls make gradients, and each
call's work (``paramcalc.core.work``), described once by its kind.

Conventions (docs/conventions.md): input gradients are computed only where a tensor upstream requires
grad (a layer reading only model inputs, or only frozen layers' outputs, needs none); weight gradients
only for trainable weights.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cached_property

from paramcalc.core.dims import Dim
from paramcalc.core.errors import ParamcalcError
from paramcalc.core.work import SavingRules, Work


@dataclass(frozen=True)
class Precision:
    """What a precision stores: bytes per weight, per weight gradient and per activation, the dtype its
    matrix products run in, and the bytes per weight of autocast's 16-bit copies (0 without autocast).
    ``state_bytes``: bytes per element of the optimizer's buffers (None: the weights'); ``master_bytes``:
    a 32-bit master copy of each trained weight the optimizer keeps (16-bit training with fp32 master
    weights, as DeepSpeed, Megatron and apex O2 train and the ZeRO paper counts)."""

    name: str
    weight_bytes: int
    gradient_bytes: int
    activation_bytes: int
    product_dtype: str
    cast_bytes: int = 0
    state_bytes: int | None = None
    master_bytes: int = 0

    def optimizer_bytes(self, state_buffers: int) -> int:
        """Bytes of optimizer state per trained weight."""
        return state_buffers * (self.weight_bytes if self.state_bytes is None else self.state_bytes) + self.master_bytes

    @property
    def mixed(self) -> bool:
        """Mixed precision: 32-bit variables, 16-bit products and activations (autocast, Keras' policy)."""
        return self.cast_bytes > 0


PRECISIONS = {p.name: p for p in (
    Precision("float32", 4, 4, 4, "float32"),
    Precision("tfloat32", 4, 4, 4, "tfloat32"),
    Precision("mixed_bfloat16", 4, 4, 2, "bfloat16", cast_bytes=2),
    Precision("mixed_float16", 4, 4, 2, "float16", cast_bytes=2),
    Precision("bfloat16", 2, 2, 2, "bfloat16"),
    Precision("float16", 2, 2, 2, "float16"),
    Precision("float16_master", 2, 2, 2, "float16", state_bytes=4, master_bytes=4),
    Precision("bfloat16_master", 2, 2, 2, "bfloat16", state_bytes=4, master_bytes=4),
)}


@dataclass(frozen=True)
class Optimizer:
    """An optimizer's footprint: buffers of state per trainable parameter (each in the parameter's dtype:
    torch and Keras make their slots like the variable), bytes one update moves per float32 parameter
    (reads and writes, torch's foreach kernels), and the framework operations one update launches."""

    name: str
    state_buffers: int
    traffic_bytes: int
    update_ops: int


OPTIMIZERS = {o.name: o for o in (
    Optimizer("sgd", 0, 12, 2),
    Optimizer("momentum", 1, 20, 4),
    Optimizer("adam", 2, 40, 12),
    Optimizer("adamw", 2, 44, 13),
    Optimizer("rmsprop", 1, 28, 8),
    Optimizer("adagrad", 1, 28, 6),
)}

# Whose training step it is: torch's eager step, Keras compiling the step (TensorFlow, JAX), or Keras'
# eager step on its torch backend. A Keras backend names the step it runs.
FRAMEWORK_NAMES = {"torch": "torch, eager", "keras": "Keras, compiled step (TensorFlow, JAX)",
                   "keras-torch": "Keras on torch, eager"}
KERAS_BACKENDS = {"tensorflow": "keras", "jax": "keras", "torch": "keras-torch"}
# The device calibration tables of what recurrent and Transformer kernels keep (``SavingRules.measured``)
MEASURED_TABLES = ("recurrent_saved", "recurrent_workspace", "transformer_saved")


def precision_named(name: str) -> Precision:
    if name not in PRECISIONS:
        raise ParamcalcError(f"unknown precision {name!r}; known: {', '.join(PRECISIONS)}", value=name)
    return PRECISIONS[name]


def optimizer_named(name: str) -> Optimizer:
    if name not in OPTIMIZERS:
        raise ParamcalcError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}", value=name)
    return OPTIMIZERS[name]


@dataclass(frozen=True)
class Step:
    """A training step: the estimate's calls (rows), each call's work, and the setup it trains with.

    ``trainable``: calls that compute weight gradients; ``needs_grad``: calls whose output requires grad
    (from a trainable call upstream)."""

    est: object
    calls: tuple
    works: dict = field(repr=False)
    trainable: frozenset
    needs_grad: frozenset
    optimizer: Optimizer
    precision: Precision
    profile: object = None
    framework: str = "torch"
    parallel: object = None  # a cost.parallel.Parallel: the step runs on several ranks
    exchanges: tuple = ()  # tensor parallelism's collectives (cost.tensor_parallel.Exchange)
    loss: str | None = None  # the loss on the first output (LOSSES), None: not counted

    def work(self, call) -> Work:
        return self.works[call.name]

    @property
    def collectives_stage_copies(self) -> bool:
        """torch's collectives on a CPU run on gloo, which stages an all-gather's output and a
        reduce-scatter's whole input in buffers of their own (ProcessGroupGloo's); NCCL's on a GPU does
        not."""
        return self.profile is not None and self.profile.device_type == "cpu"

    def exchange_buffers(self, call, backward: bool) -> Dim:
        """Elements the tensor-parallel collectives of this call's forward (or backward) hold while it
        runs."""
        copies = self.collectives_stage_copies
        return sum((e.held + (e.elements if copies and e.name == "reduce_scatter" else 0)
                    for e in self.exchanges if e.backward == backward and e.call == call.name
                    and not (e.for_input_gradient and not self.reads_grad(call))), 0)

    def reads_grad(self, call) -> bool:
        """Whether the call must make an input gradient: a tensor it reads, other than a weight operand
        (whose gradient is a weight gradient), requires grad, and its output carries a gradient."""
        if self.work(call).no_gradient:
            return False
        weights = call.layer.weight_operands() if call.layer is not None else ()
        return any(src in self.needs_grad for i, (src, _) in enumerate(call.inbound) if i not in weights)

    def trains(self, call) -> bool:
        return call.name in self.trainable

    @cached_property
    def saving_rules(self) -> SavingRules:
        profile, mixed = self.profile, self.precision.mixed
        return SavingRules(self.framework, self.precision.activation_bytes, mixed,
                           cpu=profile is not None and profile.device_type == "cpu",
                           measured={table: kept_by_kernels(profile, table, mixed) for table in MEASURED_TABLES})

    @property
    def update_style(self) -> str:
        """How the update runs: torch's foreach kernels over all tensors (its default on GPUs, and assumed
        without a device: the larger temporary), torch's loop over tensors (its default on CPUs), a compiled
        graph (Keras on TensorFlow: each layer's update runs in the backward), or Keras' own foreach update
        on its torch backend."""
        if self.framework == "keras":
            return "compiled"
        if self.framework == "keras-torch":
            return "keras-foreach"
        return "foreach" if self.profile is None or self.profile.asynchronous else "loop"


def build_step(est, optimizer: Optimizer, precision: Precision, profile=None,
               keras_backend: str | None = None, parallel=None, exchanges: tuple = (), loss: str | None = None) -> Step:
    calls = tuple(est.layers)
    owners = {c.name for c in calls if calls_weight_gradients(c)}
    # a call fed a trained weight as an operand computes that weight's gradient
    trainable = frozenset(owners | {c.name for c in calls if c.layer is not None and any(
        c.inbound[i][0] in owners for i in c.layer.weight_operands() if i < len(c.inbound))})
    works = {c.name: c.layer.work(c) for c in calls}
    needs_grad: set = set()
    for call in calls:
        if works[call.name].no_gradient:
            continue
        if call.name in trainable or any(src in needs_grad for src, _ in call.inbound):
            needs_grad.add(call.name)
    return Step(est, calls, works, trainable, frozenset(needs_grad), optimizer, precision, profile,
                training_framework(est, profile, keras_backend), parallel, exchanges, loss)


# What torch's loss on the model's output keeps for the backward and holds while its backward runs, in
# outputs' worth (the output's elements at the activations' bytes): cross-entropy keeps its log-softmax,
# and its backward makes the negative log-likelihood's gradient and, beside it, the log-softmax's (the
# model's output gradient, which the backward counts already); MSE keeps the output itself and makes the
# difference and the gradient.
LOSSES = {None: (0, 0), "cross_entropy": (1, 2), "mse": (1, 1)}


def calls_weight_gradients(call) -> bool:
    """Whether this call computes weight gradients (a shared layer's later calls accumulate them too)."""
    return call.layer is not None and any(call.layer.trains(w) for w in call.weights)


def owned_trainable_sizes(call) -> list:
    """Elements of each trainable weight tensor this call owns (none for a shared layer's later calls)."""
    if call.shared_with is not None or call.layer is None:
        return []
    return [w.numel for w in call.weights if call.layer.trains(w)]


def trainable_tensor_sizes(calls) -> list:
    """Elements of each trainable weight tensor, once per tensor (a shared layer's later calls reuse it)."""
    return [n for call in calls for n in owned_trainable_sizes(call)]


def kept_by_kernels(profile, table: str, mixed: bool) -> dict:
    """What the device's calibration measured its recurrent or Transformer kernels keep (``table``), under
    autocast when ``mixed``; a mixed-precision step without that measurement takes the float32 one for
    recurrent layers (an upper bound) and the generic rule for the Transformer."""
    if profile is None:
        return {}
    if mixed and table in profile.mixed_memory:
        return profile.mixed_memory[table]
    if mixed and table == "transformer_saved":
        return {}
    return getattr(profile, table)


def training_framework(est, profile=None, keras_backend: str | None = None) -> str:
    """Which framework runs the training step: "torch", "keras" (Keras compiling the step: TensorFlow, or
    JAX) or "keras-torch" (Keras on its torch backend, eager). A calibrated profile names the one it
    measured; otherwise the model's own framework decides, and for a Keras model its backend:
    ``keras_backend``, else that of the Keras already imported in this process, else TensorFlow (Keras'
    default). A plain spec follows torch's rules unless ``keras_backend`` is named."""
    if profile is not None and profile.framework in FRAMEWORK_NAMES:
        return profile.framework
    if est.framework == "torch" and keras_backend is not None:
        raise ParamcalcError(f"keras_backend={keras_backend!r} applies to Keras models; this one is a torch "
                             "module", value=keras_backend, fix="leave keras_backend out for torch models")
    if est.framework != "keras" and keras_backend is None:
        return "torch"
    backend = keras_backend or _imported_keras_backend() or "tensorflow"
    if backend not in KERAS_BACKENDS:
        raise ParamcalcError(f"unknown Keras backend {backend!r}; known: {', '.join(KERAS_BACKENDS)}",
                             value=backend, fix='pass keras_backend="tensorflow", "jax" or "torch"')
    return KERAS_BACKENDS[backend]


def _imported_keras_backend() -> str | None:
    """The backend of the Keras this process imported, without importing it."""
    keras = sys.modules.get("keras")
    backend = getattr(getattr(keras, "backend", None), "backend", None)
    return backend() if callable(backend) else None
