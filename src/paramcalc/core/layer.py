"""The contract every layer kind fulfils, and the context it reports through.

A kind is a frozen dataclass holding its arguments. ``infer(inputs, ctx)`` states its maths once: the
output spec from the input specs, the weights it creates (parameters follow from their shapes), and its
forward work for the whole batch. Framework differences are arguments of the kind, chosen by the
front-end; there is never a second copy of the maths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

from paramcalc.core.assumptions import Assumption
from paramcalc.core.dims import Dim, as_dim, equal, format_dim, is_positive, prod
from paramcalc.core.errors import DimensionError, LayerConfigError, ShapeError, shown
from paramcalc.core.spec import TensorSpec
from paramcalc.core.work import SavingRules, Work


@dataclass(frozen=True, slots=True)
class Weight:
    """One weight tensor a layer creates. ``buffer``: torch state that is not a Parameter.
    ``itemsize``: bytes per element where the framework fixes them (torch's int64 batch counter),
    None where they follow the training dtype."""

    name: str
    shape: tuple[Dim, ...]
    trainable: bool = True
    buffer: bool = False
    itemsize: int | None = None

    @property
    def numel(self) -> Dim:
        return prod(self.shape)


@dataclass(frozen=True, slots=True)
class Inferred:
    """What a layer does to its inputs: the output, its weights, and forward work for the batch.

    ``macs`` counts multiply-accumulates; ``flops`` counts every floating-point operation with one
    multiply-add as 2 FLOPs (so ``flops >= 2 * macs``; the rest is bias, activation, elementwise work).
    """

    output: TensorSpec
    weights: tuple[Weight, ...] = ()
    macs: Dim = 0
    flops: Dim = 0
    extra_outputs: tuple[TensorSpec, ...] = ()  # e.g. an RNN's final states, after the main output

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (self.output,) + self.extra_outputs


def format_shape(shape: Sequence[Dim | None]) -> str:
    inner = ", ".join(format_dim(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


class Context:
    """Handed to ``infer``: names the layer in errors and records undecidable comparisons."""

    __slots__ = ("layer_name", "layer_type", "assumptions", "unset_batch", "memo")

    def __init__(self, layer_name: str, layer_type: str, assumptions: list,
                 unset_batch: Dim | None = None, memo: dict | None = None) -> None:
        self.layer_name = layer_name
        self.layer_type = layer_type
        self.assumptions = assumptions
        self.unset_batch = unset_batch  # the batch symbol standing for an unset batch size
        # shared by every layer of one propagation: a rule may keep what it worked out under its own key,
        # for the same layer in the next repeat of a block (never anything that names the layer)
        self.memo = {} if memo is None else memo

    def format_shape(self, shape: Sequence[Dim]) -> str:
        """A shape for messages: the unset batch axis reads None, as in Keras."""
        if shape and self.unset_batch is not None and shape[0] == self.unset_batch:
            return format_shape((None,) + tuple(shape[1:]))
        return format_shape(shape)

    def result(self, output: TensorSpec, *, weights: Sequence[Weight] = (), macs: Dim = 0,
               flops: Dim = 0, extra_outputs: Sequence[TensorSpec] = ()) -> Inferred:
        return Inferred(output, tuple(weights), macs, flops, tuple(extra_outputs))

    def single(self, inputs: Sequence[TensorSpec]) -> TensorSpec:
        if len(inputs) != 1:
            raise self.shape_error(f"{self.layer_type} takes one input, received {len(inputs)}")
        return inputs[0]

    def shape_error(self, message: str, fix: str | None = None) -> ShapeError:
        return ShapeError(message, layer=self.layer_name, fix=fix)

    def assume_equal(self, left: Dim, right: Dim) -> None:
        """Record that the result holds only if ``left == right`` (undecidable from the symbols)."""
        self.assumptions.append(Assumption(self.layer_name, "==", left, right))

    def assume_divisible(self, total: Dim, divisor: Dim) -> None:
        """Record that the result holds only if ``divisor`` divides ``total``."""
        self.assumptions.append(Assumption(self.layer_name, "divisible", total, divisor))

    def require_positive(self, value: Dim, message: str, fix: str | None = None) -> None:
        """Raise when a size is 0 or negative; record an assumption when that depends on the symbols."""
        positive = is_positive(value)
        if positive is False:
            raise self.shape_error(message, fix)
        if positive is None:
                self.assumptions.append(Assumption(self.layer_name, "positive", value, 0))

    def require_equal(self, received: Dim, expected: Dim, message: str | Callable[[], str],
                      fix: str | None = None) -> None:
        """Raise when two sizes differ; record an assumption when that depends on the symbols.
        ``message`` may be a function that writes it: formatting every shape of a 300-input concatenate
        on each of its checks would cost more than the check."""
        same = equal(received, expected)
        if same is False:
            raise self.shape_error(message() if callable(message) else message, fix)
        if same is None:
            self.assume_equal(received, expected)


class _EveryPosition(tuple):
    """``Layer.tied`` for a layer all of whose weights another layer owns."""

    def __contains__(self, position) -> bool:
        return True

    def __repr__(self) -> str:
        return "ALL_TIED"


ALL_TIED = _EveryPosition()


@dataclass(frozen=True, kw_only=True)
class Layer:
    """Base of every layer kind. ``name`` is the layer's name in the model; ``type_name`` the class
    name the user wrote (``Linear`` for a torch layer of kind ``dense``), used in tables.
    ``trainable``: True (every weight trains), False (frozen), or the names of the weights that train.
    ``tied``: positions (in ``weights``) of weights that are another layer's (torch weight tying), so
    they count once, with their owner. ``stored_shapes``: the shapes of its weights as the framework
    stores them, where the front-end knows them (torch's Linear keeps (out, in) where the kind's kernel
    is (in, out)); sharding splits their first axis (FSDP2).
    """

    name: str | None = None
    type_name: str | None = field(default=None, compare=False)
    trainable: bool | tuple = True
    # positions of weights owned by another layer; ALL_TIED: every one (a torch module called again with
    # other call options is another layer over the same weights)
    tied: tuple = field(default=(), compare=False)
    stored_shapes: tuple = field(default=(), compare=False)


    kind: ClassVar[str] = ""

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        raise NotImplementedError(f"{type(self).__name__}.infer")

    # -- what the cost model reads (paramcalc.core.work) ------------------------------------------------
    def work(self, call) -> Work:
        """This call's work for the cost model. The default is a memory-bound pass that reads every input
        and writes the output (elementwise operations, merges, padding); kinds with products, kernels
        or views describe their own."""
        return self.described(memory_elements=sum(prod(s) for s in call.input_shapes) + prod(call.output_shape))

    def saved(self, call, rules: SavingRules) -> list:
        """(tensor key, bytes) of what the backward pass reads from this call's forward, under ``rules``:
        a key is an inbound reference for an input, (call name, part) for a tensor the call made. The
        default keeps nothing (shape-only work: views, padding, concatenation, additions)."""
        return []

    def backward_workspace(self, call, rules: SavingRules) -> Dim:
        """Bytes this call's backward holds only while it runs, beyond its gradients."""
        return 0

    def described(self, **fields) -> Work:
        """A Work filed under this kind's name (see :class:`Work`)."""
        return Work(family=self.kind, **fields)

    def view_work(self) -> Work:
        """What a view costs: no device work, a little host time, its input's storage."""
        return self.described(device_free=True, aliases_input=True, host_ops=0.5)

    def split_weights(self, weights: tuple, style: str, ranks: int) -> tuple | None:
        """One rank's share of this call's ``weights`` under tensor parallelism: ``style`` "colwise" splits
        the outputs (torch's ColwiseParallel), "rowwise" the inputs (RowwiseParallel), each in ``ranks``
        equal parts; None where the kind cannot be split so. (weights, stored shapes) otherwise."""
        return None

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        """Tensor parallelism: this call as one rank runs it when its inputs are split. ``axes``: per
        input, a ``TensorSplit`` among ``parts`` ranks (None: the whole tensor on every rank);
        ``axis_of(ref)``: the same for any tensor of the graph. Returns (the TensorSplit or None per
        output, the layer as the rank runs it), or None where the kind cannot compute on split inputs (a
        reduction over the split axis; a kind that has not said). ``core/splits.py`` holds the rules
        kinds share. Kinds whose cost follows from the call's shapes return themselves; kinds that carry
        shapes of their own scale them."""
        if all(axis is None for axis in axes):
            return (None,) * len(call.output_shapes), self
        return None

    def weight_operands(self) -> tuple:
        """Positions of inputs that are weights read as tensors (a parameter fed to a product by a torch
        forward): their gradients are the weight gradients of this call, not input gradients."""
        return ()

    def trains(self, weight: Weight) -> bool:
        """Whether ``weight`` of this layer receives gradients (buffers never do)."""
        if weight.buffer or not weight.trainable:
            return False
        if type(self.trainable) is bool:
            return self.trainable
        return weight.name in self.trainable

    @property
    def display_type(self) -> str:
        return self.type_name or type(self).__name__

    # -- argument checking shared by the kinds ---------------------------------------------------------
    def _size_arg(self, field_name: str, value: object) -> Dim:
        """A non-negative size argument (units, features); symbols allowed."""
        try:
            return as_dim(value, f"{self.display_type}({field_name}=...)")
        except DimensionError:
            raise LayerConfigError(
                f"{self.display_type} expects {field_name} to be a non-negative integer or a symbol "
                f"name. Received: {field_name}={shown(value)}",
                layer=self.name, value=value,
            ) from None

    def _set(self, field_name: str, value: object) -> None:
        object.__setattr__(self, field_name, value)

