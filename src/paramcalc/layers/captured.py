"""An operation recorded by running a torch module's forward on meta tensors (an ATen operation).

The torch front-end reads what torch.fx cannot trace by running the forward on the meta device and
recording each ATen operation between the modules paramcalc knows (``frontends/torch_capture.py``).
ATen's operation set is closed and small, so one kind describes them all: what an operation computes
follows from its family (a matrix product, a convolution, an attention core, a norm, a per-element
function, a view) and the shapes torch computed for it.

Shapes are recorded at two batch sizes; every size is then ``a + c * batch`` (``BATCH`` stands for the
batch), so an estimate keeps the batch symbolic as it does for every other kind. What autograd saved for
the backward is recorded as well (saved-tensor hooks on meta cost nothing): ``saves`` names each tensor
kept by the graph reference that made it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Sequence

from paramcalc.core.dims import Dim, exact_div, prod, subs, symbol, symbols_of
from paramcalc.core.errors import ParamcalcError
from paramcalc.core.layer import Context, Inferred, Layer
from paramcalc.core.registry import register_layer
from paramcalc.core.spec import TensorSpec
from paramcalc.core.splits import (
    TensorSplit,
    per_element_split,
    permuted_split,
    product_split,
    regrouped_split,
)
from paramcalc.core.work import AttentionCore, SavingRules, Work, kernel
from paramcalc.layers.elementwise import ACTIVATION_FLOPS, activation_kernels

BATCH = "captured_batch"  # the symbol a recorded size that follows the batch is written in

# ATen operation (its name without the overload) -> what it computes. Operations not listed move memory
# and compute nothing a FLOP counter counts (views, copies, indexing, creation).
PRODUCTS = {"mm", "addmm", "bmm", "baddbmm", "addbmm", "addmv", "mv", "dot", "_grouped_mm"}
_ADDED = {"addmm", "baddbmm", "addbmm", "addmv"}  # products whose first operand is a term added
CONVOLUTIONS = {"convolution", "_convolution", "mkldnn_convolution", "_slow_conv2d_forward"}
ATTENTION = {"_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
             "_scaled_dot_product_fused_attention_overrideable"}
NORMS = {"native_layer_norm": 8, "native_batch_norm": 8, "_native_batch_norm_legit": 8,
         "_native_batch_norm_legit_no_training": 4, "_native_batch_norm_legit_functional": 8,
         "native_group_norm": 8, "_fused_rms_norm": 4}
REDUCTIONS = {"sum", "mean", "amax", "amin", "max", "min", "var", "var_mean", "std", "std_mean", "prod",
              "norm", "linalg_vector_norm", "logsumexp", "cumsum", "argmax", "argmin"}
# kernels of operations other than the activations (which take their function's, as the activation kind
# does): a log-softmax is timed as the softmax; a dropout recorded as its operations at its random fill,
# which takes most of its time
KERNELS = {"_log_softmax": "softmax", "native_dropout": "dropout", "bernoulli": "dropout"}
ARITHMETIC = {"add", "sub", "rsub", "mul", "div", "pow", "neg", "rsqrt", "sqrt", "exp", "log", "abs", "reciprocal",
              "where", "clamp", "clamp_min", "clamp_max", "maximum", "minimum", "sin", "cos", "erf", "lerp",
              "addcmul", "addcdiv", "square", "floor", "ceil", "round", "sign", "masked_fill", "log1p", "expm1",
              "bernoulli", "eq", "ne", "lt", "le", "gt", "ge", "logical_not", "logical_and", "logical_or",
              "bitwise_not", "bitwise_and", "bitwise_or", "remainder", "fmod", "floor_divide", "atan2", "tan",
              "exp2", "log2", "log10", "trunc", "frac", "isnan", "isinf", "logical_xor", "xlogy", "erfinv", "sgn"}
# pooling: each output element reads its window (``window``, recorded from the kernel size); an adaptive
# pool reads each input element once
WINDOWS = {"avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool1d", "max_pool2d", "max_pool3d",
           "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices", "_adaptive_avg_pool2d",
           "_adaptive_avg_pool3d", "adaptive_avg_pool1d", "adaptive_max_pool1d", "adaptive_max_pool2d",
           "adaptive_max_pool3d", "lp_pool1d", "lp_pool2d"}
# interpolation: nearest copies; (bi/tri)linear and bicubic blend, 4 FLOPs per axis per output element
# (2 multiplies, 2 adds), as paramcalc's UpSample counts them
RESAMPLING = {"upsample_nearest1d": 0, "upsample_nearest2d": 0, "upsample_nearest3d": 0, "_upsample_nearest_exact1d": 0,
              "_upsample_nearest_exact2d": 0, "_upsample_nearest_exact3d": 0, "upsample_linear1d": 4,
              "upsample_bilinear2d": 8, "_upsample_bilinear2d_aa": 8, "upsample_trilinear3d": 12,
              "upsample_bicubic2d": 8, "_upsample_bicubic2d_aa": 8, "grid_sampler_2d": 8}
# operations that move, copy, index or create memory and compute nothing a FLOP counter counts
MOVES = {"view", "_unsafe_view", "reshape", "_reshape_alias", "slice", "expand", "clone", "contiguous", "permute",
         "transpose", "t", "scalar_tensor", "copy", "_to_copy", "select", "unsqueeze", "squeeze", "cat", "stack",
         "constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d", "replication_pad1d",
         "replication_pad2d", "replication_pad3d", "index", "_unsafe_index", "index_select", "gather", "scatter",
         "index_put", "_index_put_impl", "alias", "roll", "new_zeros", "new_ones", "new_empty", "new_full",
         "new_empty_strided", "zero", "fill", "unbind", "split", "split_with_sizes", "chunk", "detach", "lift_fresh",
         "lift_fresh_copy", "arange", "zeros", "ones", "full", "empty", "empty_like", "empty_strided", "zeros_like",
         "ones_like", "full_like", "rand", "randn", "rand_like", "randn_like", "randint", "tril", "triu", "flip",
         "repeat", "embedding", "narrow", "as_strided", "diagonal", "movedim", "unfold", "im2col", "col2im",
         "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "one_hot", "masked_scatter",
         "view_as_real", "view_as_complex", "_conj", "real", "imag", "unflatten", "flatten", "expand_as", "view_as",
         "resize", "set", "_to_dtype", "type_as", "to", "linspace", "logspace", "eye", "diag_embed", "rot90"}
_ACTIVATION_NAMES = {"gelu": "gelu", "silu": "silu", "sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu",
                     "hardtanh": "hard_tanh", "elu": "elu", "leaky_relu": "leaky_relu", "mish": "mish",
                     "softplus": "softplus", "hardswish": "hard_silu", "hardsigmoid": "hard_sigmoid",
                     "_softmax": "softmax", "_safe_softmax": "softmax", "_log_softmax": "log_softmax",
                     "glu": "glu", "celu": "celu", "selu": "selu", "prelu": "prelu", "_prelu_kernel": "prelu"}


def _base(op: str) -> str:
    """The operation without torch's in-place mark (``add_`` is ``add``)."""
    return op[:-1] if op.endswith("_") and not op.endswith("__") else op


@lru_cache(maxsize=None)  # a model runs a few dozen operations thousands of times
def family(op: str) -> str:
    """What the operation ``op`` (an ATen name without its overload) computes, in a word; "unknown" for
    an operation whose arithmetic paramcalc does not know (priced as one pass over its memory, no FLOPs)."""
    base = _base(op)
    for name, group in (("product", PRODUCTS), ("convolution", CONVOLUTIONS), ("attention", ATTENTION),
                        ("norm", NORMS), ("reduction", REDUCTIONS), ("window", WINDOWS), ("resampling", RESAMPLING)):
        if base in group:
            return name
    if base in _ACTIVATION_NAMES:
        return "activation"
    if base in ARITHMETIC:
        return "arithmetic"
    return "memory" if base in MOVES else "unknown"


@register_layer("captured")
@dataclass(frozen=True)
class CapturedOp(Layer):
    """One ATen operation of a torch forward, as torch computed it on meta tensors.

    ``op``: the operation (``aten.addmm``); ``input_forms``/``output_forms``: the shapes torch
    computed, each size ``a + c * BATCH``; ``output_dtypes``: torch's dtypes; ``reads``: how many inbound
    tensors it computes on (one more, where present, is read for the batch size only: an operation
    whose output follows the batch but no input of which does, such as ``arange(x.size(0))``);
    ``weight_inputs``: positions of inputs that are parameters (or views of them); ``view``: its output
    is its input's storage; ``in_place``: it wrote its output into its first input (``relu_``);
    ``saves``: (graph reference, shape form, bytes per element or None for the training dtype) of each
    tensor autograd kept for its backward; ``no_gradient``: no output required grad in the run (a tensor
    made without autograd, such as a dropout's noise), so no gradient flows through it.
    """

    op: str = ""
    input_forms: tuple = ()
    output_forms: tuple = ((),)
    output_dtypes: tuple = ("float32",)
    reads: int = 0
    weight_inputs: tuple = ()
    view: bool = False
    in_place: bool = False
    saves: tuple = ()
    transposed: bool = False  # a convolution's transposed flag (its products run from the input's side)
    window: int = 0  # a pool's kernel size (elements per window); 0 for an adaptive pool
    dims: tuple = ()  # the axes its arguments name (a softmax's, a transpose's), negative from the end
    no_gradient: bool = False  # its outputs carry no gradient (``empty_like``, a random fill, a comparison)

    @property
    def family(self) -> str:
        return family(self.op.split(".")[-1])

    def infer(self, inputs: Sequence[TensorSpec], ctx: Context) -> Inferred:
        # everything below follows from these fields and the input shapes alone: the same operation in
        # the next repeat of a block takes the result worked out for the first
        key = ("captured", self.op, self.input_forms, self.output_forms, self.output_dtypes, self.reads,
               self.transposed, self.window, tuple([tuple(spec.shape) for spec in inputs]))
        found = ctx.memo.get(key)
        if found is not None:
            return found
        batch = self._batch([spec.shape for spec in inputs])
        for position, (spec, form) in enumerate(zip(inputs[:self.reads], self.input_forms)):
            expected = _at(form, batch)
            if tuple(spec.shape) != expected:
                raise ctx.shape_error(
                    f"{self.op} input {position} is {ctx.format_shape(spec.shape)} where torch computed "
                    f"{ctx.format_shape(expected)}: the rule of the module that made it disagrees with torch",
                    fix="report this model: paramcalc's rule for that module is wrong")
        outputs = [TensorSpec(_at(form, batch), dtype) for form, dtype in zip(self.output_forms, self.output_dtypes)]
        shapes = [_at(form, batch) for form in self.input_forms]
        macs = _macs(self, shapes, outputs[0].shape)
        found = ctx.memo[key] = ctx.result(outputs[0], macs=macs,
                                           flops=2 * macs + _other_flops(self, shapes, outputs[0].shape),
                                           extra_outputs=outputs[1:])
        return found

    def _batch(self, shapes: list) -> Dim:
        """The batch size of this call, solved from the first input size that follows it."""
        forms = list(self.input_forms) + [(symbol(BATCH),)] * (len(shapes) - len(self.input_forms))
        for shape, form in zip(shapes, forms):
            for size, recorded in zip(shape, form):
                if type(recorded) is not int and BATCH in symbols_of(recorded):
                    batch = _solved(recorded, size)
                    if batch is not None:
                        return batch
        return symbol(BATCH)  # nothing it reads follows the batch: neither does anything it makes

    def work(self, call) -> Work:
        work = self._work(call)
        if self.in_place:
            work = replace(work, writes_input=True)
        return replace(work, no_gradient=True) if self.no_gradient else work

    def _work(self, call) -> Work:
        batch = self._batch(list(call.input_shapes))
        shapes = [_at(form, batch) for form in self.input_forms]
        out = call.output_shape
        fam = self.family
        if self.view:
            return self.view_work()
        if fam == "product":
            m, k, n = _product(self.op, shapes)
            if self.weight_inputs:
                added = prod(out) if len(shapes) > 2 and 0 in self.weight_inputs else 0  # addmm's bias
                return self.described(weight_products=((m, k, n),), bias_elements=added, host_ops=1)
            return self.described(activation_products=((m, k, n),), activation_macs=m * k * n)
        if fam == "convolution":
            # (positions, inputs per output, outputs per position): from the output's side, or the input's
            # for a transposed convolution, whose filters each spread one input over a window
            weight, side = shapes[1], (shapes[0] if self.transposed else out)
            per_position = prod(weight[1:]) if not self.transposed else weight[1] * prod(weight[2:])
            channels = side[1]
            product = (prod(side) // channels, channels if self.transposed else per_position,
                       per_position if self.transposed else channels)
            whole = product if not self.transposed and len(out) == 4 and weight[0] == out[1] and weight[1] == shapes[0][1] else None
            return self.described(weight_products=(product,), conv=whole)
        if fam == "attention":
            return self.described(attention=(_attention(shapes),))
        base = _base(self.op.split(".")[-1])
        name = KERNELS.get(base)
        if name is not None:
            return self.described(kernels=(kernel(name, prod(out)),))
        if fam == "activation":  # as the activation kind prices the function
            return self.described(kernels=activation_kernels(_ACTIVATION_NAMES[base], prod(out)))
        moved = sum(prod(s) for s in shapes) + sum(prod(_at(f, batch)) for f in self.output_forms)
        return self.described(memory_elements=moved)

    def saved(self, call, rules: SavingRules) -> list:
        batch = self._batch(list(call.input_shapes))
        return [(ref, prod(_at(form, batch)) * (itemsize or rules.activation_bytes)) for ref, form, itemsize in self.saves]

    def weight_operands(self) -> tuple:
        return self.weight_inputs

    def split_share(self, call, axes: tuple, parts: int, axis_of) -> tuple | None:
        out = _split_outputs(self, call, axes, parts)
        if out is None:
            return None
        own = {(call.name, i): split for i, split in enumerate(out)}
        saves = tuple((ref, _local(form, own[ref] if ref in own else axis_of(ref), parts, call.name), size)
                      for ref, form, size in self.saves)
        whole = (None,) * (len(self.input_forms) - len(axes))
        layer = replace(self, input_forms=tuple(_local(f, a, parts, call.name) for f, a in zip(self.input_forms, axes + whole)),
                        output_forms=tuple(_local(f, a, parts, call.name) for f, a in zip(self.output_forms, out)),
                        saves=saves)
        return out, layer

    @property
    def display_type(self) -> str:
        return self.type_name or self.op


@lru_cache(maxsize=4096)  # every operation on a tensor of one shape solves the same size again
def _solved(recorded: Dim, size: Dim) -> Dim | None:
    """The batch at which the recorded size ``recorded`` (``a + c * BATCH``) is ``size``; None where
    none is."""
    constant = subs(recorded, {BATCH: 0})
    return exact_div(size - constant, subs(recorded, {BATCH: 1}) - constant)


@lru_cache(maxsize=8192)  # a repeated block's operations share their forms: each is solved once
def _at(form: tuple, batch: Dim) -> tuple:
    return tuple(subs(size, {BATCH: batch}) if symbols_of(size) else size for size in form)


def _product(op: str, shapes: list) -> tuple:
    """(m, k, n) of the matrix product ``op`` from its operands' shapes: the first two are the factors,
    except where the first is the term added (addmm, baddbmm, addbmm, addmv); _grouped_mm's third is the
    groups' offsets."""
    a, b = shapes[1:3] if _base(op.split(".")[-1]) in _ADDED else shapes[:2]
    if len(b) == 1:  # matrix-vector
        return prod(a[:-1]), a[-1], 1
    if len(a) == 3 and len(b) == 2:  # _grouped_mm's groups of b's columns, each taking all of a's rows
        return a[1], a[2], b[1]
    # also _grouped_mm's other layouts: groups of a's rows (a 2-D, b one matrix per group), of the
    # contraction (both 2-D), or one product per group (both 3-D): each row meets one group's columns once
    return prod(a[:-1]), a[-1], b[-1]


def _attention(shapes: list) -> AttentionCore:
    query, key, value = shapes[:3]
    return AttentionCore(prod(query[:-2]), query[-2], key[-2], query[-1], value[-1], dropout=False)


def _macs(layer: CapturedOp, shapes: list, out: tuple) -> Dim:
    fam = layer.family
    if fam == "product":
        m, k, n = _product(layer.op, shapes)
        return m * k * n
    if fam == "convolution":
        # weight (out_channels, in_channels / groups, *kernel): each output element reads one filter; a
        # transposed convolution's weight is (in_channels, out_channels / groups, *kernel) and each
        # input element is spread by one
        weight = shapes[1]
        return prod(shapes[0] if layer.transposed else out) * prod(weight[1:])
    if fam == "attention":
        return sum(m * k * n for m, k, n in _attention(shapes).products())
    return 0


def _other_flops(layer: CapturedOp, shapes: list, out: tuple) -> Dim:
    """FLOPs beyond the products: per element of the output for functions and arithmetic, per element
    read for reductions, the norms' passes; views, copies and indexing compute nothing."""
    fam, base = layer.family, _base(layer.op.split(".")[-1])
    if fam == "activation":
        return ACTIVATION_FLOPS.get(_ACTIVATION_NAMES[base], 1) * prod(out)
    if fam == "arithmetic":
        return prod(out)
    if fam == "norm":
        return NORMS[base] * prod(out)
    if fam == "reduction":
        return prod(shapes[0]) if shapes else 0
    if fam == "window":
        return prod(out) * layer.window if layer.window else prod(shapes[0])
    if fam == "resampling":
        return RESAMPLING[base] * prod(out)
    if fam in ("product", "convolution") and len(shapes) > 2 and layer.op.split(".")[-1] in ("addmm", "baddbmm"):
        return prod(out)  # the added term
    return 0


# -- tensor parallelism: where a split of the inputs lands in the outputs ----------------------------------
_SAME_SHAPE = {"clone", "contiguous", "_to_copy", "copy", "alias", "detach", "lift_fresh", "lift_fresh_copy", "to",
               "_to_dtype", "type_as", "zero", "fill", "empty_like", "zeros_like", "ones_like", "full_like",
               "rand_like", "randn_like", "native_dropout", "relu"}
_RESHAPES = {"view", "_unsafe_view", "reshape", "_reshape_alias", "flatten", "unflatten", "view_as", "squeeze",
             "unsqueeze"}
_SOFTMAX = {"_softmax", "_safe_softmax", "_log_softmax", "glu"}


def _split_outputs(layer: CapturedOp, call, axes: tuple, parts: int) -> tuple | None:
    """The TensorSplit of each output when ``axes`` split the inputs; None where the operation cannot run on
    the parts alone (it reduces over the split axis, mixes it with a whole tensor, or paramcalc does not
    know where the split goes)."""
    outs = call.output_shapes
    if all(split is None for split in axes):
        return (None,) * len(outs)
    base, fam = _base(layer.op.split(".")[-1]), layer.family
    shapes = call.input_shapes
    if fam in ("arithmetic", "activation") or base in _SAME_SHAPE:
        return per_element_split(call, axes, layer.dims if base in _SOFTMAX else ())
    if fam == "norm":
        return per_element_split(call, axes, layer.dims) if base in ("native_layer_norm", "_fused_rms_norm") else None
    if len(axes) != len(shapes):
        return None
    first, rank = axes[0], len(shapes[0])
    rest_whole = all(split is None for split in axes[1:])
    if fam == "reduction":
        reduced = {d % rank for d in layer.dims} if layer.dims else set(range(rank))
        if not rest_whole or first is None or first.axis in reduced:
            return None
        kept = len(call.output_shape) == rank  # keepdim
        moved = first if kept else first.moved(first.axis - sum(1 for d in reduced if d < first.axis))
        return tuple(moved if len(s) > moved.axis else None for s in outs)
    if fam == "attention":  # query, key, value split alike on a leading (batch or head) axis; a mask broadcast
        # (grouped-query attention: key and value hold fewer heads, each rank its share of them)
        if first is None or first.axis >= rank - 2 or any(
                a is None or a.axis != first.axis or a.sequence != first.sequence for a in axes[1:3]):
            return None
        if any(a is not None for a in axes[3:]) or any(
                len(s) - rank + first.axis >= 0 and s[len(s) - rank + first.axis] != 1 for s in shapes[3:]):
            return None
        return tuple(first if len(s) > first.axis else None for s in outs)
    if fam == "product":
        # a grouped product's groups (a mixture's experts) are not split the way a product's axes are
        return product_split(call, axes) if base != "_grouped_mm" else None
    if base in ("cat", "stack"):
        # cat passes over a 1-D empty tensor whatever the others' shape (an empty cache's keys)
        joined = [a for a, s in zip(axes, shapes) if base == "stack" or tuple(s) != (0,)]
        if len(set(joined)) != 1:
            return None
        first = joined[0]
        dim = layer.dims[0] % (rank + (base == "stack")) if layer.dims else 0
        return (first.moved(first.axis + 1) if base == "stack" and dim <= first.axis else first,)
    if first is None:
        return None
    if base in ("expand", "expand_as"):
        at = len(call.output_shape) - rank + first.axis
        return (first.moved(at),) if call.output_shape[at] == shapes[0][first.axis] else None
    if base in ("transpose", "permute", "t"):
        if not rest_whole:
            return None
        order = list(range(rank))
        dims = [d % rank for d in layer.dims] if layer.dims else [0, 1]
        if base == "permute":
            order = dims
        else:
            order[dims[0]], order[dims[1]] = order[dims[1]], order[dims[0]]
        return permuted_split(first, order)
    if base in ("split", "split_with_sizes", "chunk", "unbind", "select", "slice", "narrow"):
        dim = layer.dims[0] % rank if layer.dims else 0
        if dim == first.axis:  # pieces of the split axis, each split among the ranks (Megatron's fused projections)
            if base not in ("split", "split_with_sizes", "chunk"):
                return None
            runs = [exact_div(s[dim], parts) for s in outs]
            return None if None in runs else tuple(first.moved(dim, run) for run in runs)
        at = first.axis - 1 if base in ("select", "unbind") and dim < first.axis else first.axis
        return (first.moved(at),) * len(outs)
    if base in _RESHAPES or layer.view:
        return regrouped_split(shapes[0], call.output_shape, first, len(outs))
    return None


def _local(form: tuple, split: TensorSplit | None, parts: int, name: str) -> tuple:
    """``form`` with the split axis holding one rank's part."""
    if split is None:
        return form
    axis = split.axis
    part = exact_div(form[axis], parts)
    if part is None:
        raise ParamcalcError(f"'{name}': axis {axis} ({form[axis]}) does not split into {parts} equal parts",
                             layer=name, value=form[axis], fix=f"use a tensor-parallel degree that divides {form[axis]}")
    return tuple(form[:axis]) + (part,) + tuple(form[axis + 1:])
