"""Meta kernels answered from memory or by a shape rule (frontends/torch_meta_memo.py,
torch_meta_shapes.py): a rule's answer is torch's meta kernel's, dtype, shape and strides, on any layout
and dtype it is given (or it declines and the kernel runs); a call the kernel refuses is never answered;
a call again alike gets fresh tensors like the first; an estimate is the same with the memo as without."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paramcalc import estimate
from paramcalc.frontends import torch_capture, torch_meta_memo
from paramcalc.frontends.torch_meta_shapes import shape_rules

torch = pytest.importorskip("torch")
aten = torch.ops.aten
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.bool)


@st.composite
def tensors(draw, rank=None, shape=None, dtype=None):
    """A meta tensor of any layout: contiguous, permuted, expanded, sliced, or with odd strides on size-1
    axes, each of which a rule must either answer exactly or decline."""
    if shape is None:
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=rank or 0, max_size=rank or 4)))
    dtype = dtype or draw(st.sampled_from(DTYPES))
    layout = draw(st.sampled_from(("contiguous", "permuted", "expanded", "sliced", "odd", "channels_last")))
    shape = tuple(shape)
    if layout == "channels_last" and len(shape) in (4, 5):
        formats = {4: torch.channels_last, 5: torch.channels_last_3d}
        return torch.empty(shape, dtype=dtype, device="meta", memory_format=formats[len(shape)])
    if layout == "permuted" and len(shape) >= 2:
        return torch.empty(shape[::-1], dtype=dtype, device="meta").permute(*reversed(range(len(shape))))
    if layout == "expanded" and 1 in shape:
        return torch.empty(tuple(1 for _ in shape), dtype=dtype, device="meta").expand(shape)
    if layout == "sliced" and shape:
        return torch.empty((*shape[:-1], shape[-1] * 2), dtype=dtype, device="meta")[..., ::2]
    if layout == "odd" and 1 in shape:
        strides = list(torch.empty(shape, device="meta").stride())
        strides[shape.index(1)] = 97
        return torch.empty_strided(shape, strides, dtype=dtype, device="meta")
    return torch.empty(shape, dtype=dtype, device="meta")


def described(out):
    return [(t.dtype, tuple(t.shape), t.stride()) for t in ((out,) if not isinstance(out, tuple) else out)]


def same_as_kernel(func, *args, **kwargs) -> None:
    """The rule for ``func`` answers as torch's meta kernel does, or declines; it declines every call the
    kernel refuses."""
    answer = shape_rules()[func](args, kwargs)
    try:
        theirs = func(*args, **kwargs)
    except Exception:  # a call torch refuses is left to torch, which says why
        assert answer is None, f"{func} answered a call torch refuses: {described(answer)}"
        return
    if answer is not None:
        assert described(answer) == described(theirs), func


def broadcastable(draw, rank):
    """Two shapes that broadcast, or (one in four) that may not."""
    base = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    other = [draw(st.sampled_from((s, 1, s))) if draw(st.booleans()) else draw(st.integers(1, 4)) for s in base]
    return base, other[draw(st.integers(0, rank)):]


def cat_operands(data, min_rank: int, max_rank: int, dtype) -> tuple:
    """One to three tensors of any layouts that agree but on one axis (of length 0 to 3), and that axis;
    ``dtype()`` draws each one's dtype."""
    shape = data.draw(st.lists(st.integers(1, 3), min_size=min_rank, max_size=max_rank))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    parts = []
    for _ in range(data.draw(st.integers(1, 3))):
        part = list(shape)
        part[dim] = data.draw(st.integers(0, 3))
        parts.append(data.draw(tensors(shape=part, dtype=dtype())))
    return parts, dim


@settings(max_examples=200, deadline=None)
@given(st.data(), st.sampled_from(("add.Tensor", "mul.Tensor", "sub.Tensor", "div.Tensor", "maximum.default",
                                   "pow.Tensor_Tensor")))
def test_binary_elementwise_rules_answer_as_the_kernel(data, name):
    rank = data.draw(st.integers(0, 4))
    left, right = broadcastable(data.draw, rank)
    x = data.draw(tensors(shape=left))
    y = data.draw(tensors(shape=right, dtype=data.draw(st.sampled_from((x.dtype, x.dtype, torch.float32)))))
    packet, overload = name.split(".")
    same_as_kernel(getattr(getattr(aten, packet), overload), x, y)


@settings(max_examples=150, deadline=None)
@given(tensors(), st.sampled_from(("relu", "gelu", "silu", "tanh", "rsqrt", "neg", "exp", "sigmoid")),
       st.sampled_from((None, 2, 0.5, True)))
def test_unary_and_scalar_elementwise_rules_answer_as_the_kernel(x, name, scalar):
    same_as_kernel(getattr(aten, name).default, x)
    if scalar is not None:
        for func in (aten.mul.Scalar, aten.add.Scalar, aten.pow.Tensor_Scalar, aten.add.Tensor):
            same_as_kernel(func, x, scalar)
    same_as_kernel(aten.gelu.default, x, approximate="tanh")


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_where_addmm_and_cat_rules_answer_as_the_kernel(data):
    rank = data.draw(st.integers(0, 3))
    left, right = broadcastable(data.draw, rank)
    condition = data.draw(tensors(shape=left, dtype=torch.bool))
    x = data.draw(tensors(shape=right))
    same_as_kernel(aten.where.self, condition, x, data.draw(tensors(shape=left, dtype=x.dtype)))
    n, k, m = (data.draw(st.integers(1, 4)) for _ in range(3))
    bias_shape = data.draw(st.sampled_from(((m,), (n, m), (1, m), (n, 1), (), (k,))))
    dtype = data.draw(st.sampled_from(DTYPES[:4]))
    same_as_kernel(aten.addmm.default, data.draw(tensors(shape=bias_shape, dtype=dtype)),
                   data.draw(tensors(shape=(n, k), dtype=dtype)),
                   data.draw(tensors(shape=(data.draw(st.sampled_from((k, k, m))), m), dtype=dtype)), beta=1, alpha=1)
    parts, dim = cat_operands(data, 1, 3, lambda: data.draw(st.sampled_from((x.dtype, x.dtype, torch.int64))))
    same_as_kernel(aten.cat.default, parts, dim)


@settings(max_examples=150, deadline=None)
@given(tensors(), st.data())
def test_norm_softmax_reduction_and_triangle_rules_answer_as_the_kernel(x, data):
    rank = x.dim()
    trailing = data.draw(st.integers(0, rank))
    normalized = list(x.shape[rank - trailing:]) if data.draw(st.booleans()) or not rank else [x.shape[-1] + 1]
    weight = data.draw(st.sampled_from((None, "same", "half")))
    affine = None if weight is None else torch.empty(
        normalized, dtype=x.dtype if weight == "same" else torch.float16, device="meta")
    same_as_kernel(aten.native_layer_norm.default, x, normalized, affine, affine, 1e-5)
    channels = x.shape[1:2] if data.draw(st.booleans()) or rank < 2 else (x.shape[1] + 1,)
    statistics = data.draw(st.sampled_from((None, "same", "half")))
    running = None if statistics is None else torch.empty(
        channels, dtype=x.dtype if statistics == "same" else torch.float16, device="meta")
    same_as_kernel(aten.native_batch_norm.default, x, running, running, running, running, data.draw(st.booleans()),
                   0.1, 1e-5)
    dim = data.draw(st.integers(-rank - 1, rank))
    same_as_kernel(aten._softmax.default, x, dim, False)
    same_as_kernel(aten._safe_softmax.default, x, dim)
    dims = data.draw(st.lists(st.integers(-rank - 1, rank), min_size=1, max_size=2, unique=True))
    keep = data.draw(st.booleans())
    same_as_kernel(aten.mean.dim, x, dims, keep)
    same_as_kernel(aten.sum.dim_IntList, x, dims, keep)
    same_as_kernel(aten.tril.default, x, data.draw(st.integers(-2, 2)))
    same_as_kernel(aten.triu.default, x)


@settings(max_examples=200, deadline=None)
@given(st.data(), st.sampled_from(("add.Tensor", "sub.Tensor", "mul.Tensor", "maximum.default", "floor_divide.default",
                                   "remainder.Tensor", "eq.Tensor", "le.Tensor", "gt.Tensor", "bitwise_and.Tensor",
                                   "logical_or.default")))
def test_integer_comparison_and_boolean_rules_answer_as_the_kernel(data, name):
    """Integer tensors keep their dtype with integer numbers; comparisons make booleans of any real dtype."""
    rank = data.draw(st.integers(0, 4))
    left, right = broadcastable(data.draw, rank)
    dtype = data.draw(st.sampled_from((torch.int64, torch.int32, torch.bool, torch.float32)))
    x = data.draw(tensors(shape=left, dtype=dtype))
    y = data.draw(tensors(shape=right, dtype=data.draw(st.sampled_from((dtype, dtype, torch.int64)))))
    packet, overload = name.split(".")
    same_as_kernel(getattr(getattr(aten, packet), overload), x, y)
    number = data.draw(st.sampled_from((0, 3, -2, True, 0.5)))
    for func in (aten.add.Tensor, aten.mul.Tensor, aten.sub.Tensor, aten.clamp_max.default, aten.eq.Scalar,
                 aten.ne.Scalar, aten.lt.Scalar, aten.ge.Scalar, aten.clamp_min.default, aten.clamp.default,
                 aten.floor_divide.Scalar, aten.remainder.Scalar, aten.rsub.Scalar):
        same_as_kernel(func, x, number)
    same_as_kernel(aten.clamp.default, x, None, number)
    same_as_kernel(aten.abs.default, x)
    same_as_kernel(aten.neg.default, x)


@settings(max_examples=200, deadline=None)
@given(tensors(), st.data())
def test_roll_clone_norm_fill_and_lookup_rules_answer_as_the_kernel(x, data):
    rank = x.dim()
    dims = data.draw(st.lists(st.integers(-rank - 1, rank), max_size=3))
    shifts = data.draw(st.lists(st.integers(-5, 5), min_size=len(dims) if dims else 1,
                                max_size=len(dims) + 1 if dims else 2))
    same_as_kernel(aten.roll.default, x, shifts, dims)
    same_as_kernel(aten.roll.default, x, shifts[:1])
    for layout in (None, torch.preserve_format, torch.contiguous_format, torch.channels_last):
        same_as_kernel(aten.clone.default, x, memory_format=layout)
    same_as_kernel(aten.clone.default, x)
    reduced = data.draw(st.sampled_from((None, [-1], [0, -1], dims[:1], dims[:2], 0)))
    ord_ = data.draw(st.sampled_from((2, 2.0, 1, float("inf"), 0)))
    same_as_kernel(aten.linalg_vector_norm.default, x, ord_, reduced, data.draw(st.booleans()))
    mask_shape = data.draw(st.sampled_from((x.shape, x.shape[1:], (1,) * rank, (2,) + tuple(x.shape))))
    mask = data.draw(tensors(shape=mask_shape, dtype=data.draw(st.sampled_from((torch.bool, torch.bool, torch.int64)))))
    same_as_kernel(aten.masked_fill.Scalar, x, mask, data.draw(st.sampled_from((0.0, -100.0, 1, True))))
    indices = data.draw(tensors(dtype=data.draw(st.sampled_from((torch.int64, torch.int32, torch.float32)))))
    if rank == 2:
        same_as_kernel(aten.embedding.default, x, indices)
    same_as_kernel(aten.embedding.default, data.draw(tensors(shape=(5, 3))), indices)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_product_arange_and_channels_last_cat_rules_answer_as_the_kernel(data):
    dtype = data.draw(st.sampled_from(DTYPES))
    n, k, m, b = (data.draw(st.integers(1, 4)) for _ in range(4))
    inner = data.draw(st.sampled_from((k, k, k + 1)))
    other = data.draw(st.sampled_from((dtype, dtype, torch.float32)))
    same_as_kernel(aten.mm.default, data.draw(tensors(shape=(n, k), dtype=dtype)),
                   data.draw(tensors(shape=(inner, m), dtype=other)))
    same_as_kernel(aten.bmm.default, data.draw(tensors(shape=(b, n, k), dtype=dtype)),
                   data.draw(tensors(shape=(data.draw(st.sampled_from((b, b, b + 1))), inner, m), dtype=dtype)))
    bounds = data.draw(st.lists(st.integers(-6, 9), min_size=1, max_size=3))
    if len(bounds) == 3 and data.draw(st.booleans()):
        bounds[2] = data.draw(st.sampled_from((1, 2, -1, -3, 0)))
    overload = {1: aten.arange.default, 2: aten.arange.start, 3: aten.arange.start_step}[len(bounds)]
    arange_dtype = data.draw(st.sampled_from((None, torch.int32, torch.float32, torch.float16, torch.bool)))
    same_as_kernel(overload, *bounds, dtype=arange_dtype, device=torch.device("meta"), pin_memory=False)
    parts, dim = cat_operands(data, 4, 5, lambda: dtype)  # 4-D and 5-D: channels last where each input is
    same_as_kernel(aten.cat.default, parts, dim)
    empty = torch.empty(0, dtype=data.draw(st.sampled_from((dtype, torch.float32))), device="meta")
    parts.insert(data.draw(st.integers(0, len(parts))), empty)  # an empty 1-D tensor, which torch skips
    same_as_kernel(aten.cat.default, parts, dim)


def test_a_call_again_alike_gets_fresh_tensors_like_the_first():
    memo = torch_meta_memo.MetaMemo()
    x = torch.empty(2, 3, 5, device="meta").transpose(1, 2)  # no rule answers a transposed input
    first = memo.call(aten.native_layer_norm.default, (x, [3], None, None, 1e-5), {})
    again = memo.call(aten.native_layer_norm.default, (x, [3], None, None, 1e-5), {})
    assert memo.hits == 1 and described(again) == described(first)
    assert all(a.untyped_storage()._cdata != b.untyped_storage()._cdata for a, b in zip(first, again))
    y = memo.call(aten.view.default, (x.contiguous(), [10, 3]), {})  # a view is never copied: it shares storage
    assert y.untyped_storage()._cdata != x.untyped_storage()._cdata and memo.hits == 1
    with pytest.raises(RuntimeError):  # a refused call is refused again, by torch
        memo.call(aten.mm.default, (torch.empty(2, 3, device="meta"), torch.empty(4, 5, device="meta")), {})
    with pytest.raises(RuntimeError):
        memo.call(aten.mm.default, (torch.empty(2, 3, device="meta"), torch.empty(4, 5, device="meta")), {})


def test_the_checked_mode_fails_where_a_rule_differs_from_the_kernel(monkeypatch):
    wrong = dict(shape_rules())
    wrong[aten.relu.default] = lambda args, kwargs: torch.empty(3, device="meta")
    monkeypatch.setattr(torch_meta_memo, "shape_rules", lambda: wrong)
    monkeypatch.setattr(torch_meta_memo, "CHECK", True)
    with pytest.raises(AssertionError, match="relu"):
        torch_meta_memo.MetaMemo().call(aten.relu.default, (torch.empty(2, device="meta"),), {})


class Decoder(torch.nn.Module):
    """Hand-written norms, softmax attention and GELU: the operations the rules answer, run outside known
    modules, four layers alike."""

    def __init__(self, width=16, depth=4):
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(width, 3 * width) for _ in range(depth))
        self.out = torch.nn.Linear(width, 5)

    def forward(self, x):
        for block in self.blocks:
            h = torch.nn.functional.layer_norm(x.float(), x.shape[-1:])
            q, k, v = block(h).chunk(3, dim=-1)
            scores = (q @ k.transpose(-1, -2)) / 4.0
            scores = scores + torch.triu(torch.full(scores.shape[-2:], float("-inf")), 1)
            x = x + torch.nn.functional.gelu(scores.softmax(-1) @ v).mean(-1, keepdim=True)
        return self.out(x)


def test_an_estimate_is_the_same_with_the_memo_as_without(monkeypatch):
    with torch.device("meta"):
        model = Decoder()
    monkeypatch.setattr(torch_meta_memo, "CHECK", True)
    with_memo = estimate(model, input_shape=(7, 16), optimizer="adam").subs(batch=3)
    monkeypatch.setattr(torch_capture, "META_MEMO", False)
    without = estimate(model, input_shape=(7, 16), optimizer="adam").subs(batch=3)
    assert with_memo.to_json() == without.to_json()
    assert with_memo.params == 4 * (16 * 48 + 48) + 16 * 5 + 5


def test_a_tensor_contiguous_with_odd_strides_on_axes_of_length_one_is_answered_as_the_kernel_does():
    """timm's MaxxViT head: a (2, 1, 1, 768) tensor with strides (768, 1, 1, 1) is contiguous to torch, so
    layer norm keeps those strides."""
    x = torch.empty_strided((2, 1, 1, 768), (768, 1, 1, 1), device="meta")
    for func, args in ((aten.native_layer_norm.default, (x, [768], None, None, 1e-6)), (aten.gelu.default, (x,)),
                       (aten.add.Tensor, (x, x)), (aten.native_batch_norm.default, (x, None, None, None, None, True,
                                                                                    0.1, 1e-5))):
        same_as_kernel(func, *args)


def test_the_plain_calls_a_model_makes_most_are_answered_by_a_rule():
    """The rules answer (do not decline) the calls they exist for, exactly as the kernel does."""
    x, w, b = (torch.empty(s, device="meta") for s in ((2, 7, 16), (48, 16), (48,)))
    half = torch.empty(2, 7, 16, dtype=torch.bfloat16, device="meta")
    positions = torch.empty(8, dtype=torch.int64, device="meta")
    image = torch.empty(2, 3, 4, 4, device="meta", memory_format=torch.channels_last)
    calls = [(aten.native_layer_norm.default, (x, [16], w[0], b[:16].contiguous(), 1e-5)),
             (aten.addmm.default, (b, x.view(14, 16), w.t().contiguous())), (aten.add.Tensor, (x, x[:1])),
             (aten.mul.Scalar, (half, 0.5)), (aten.gelu.default, (half,)), (aten._safe_softmax.default, (x, -1)),
             (aten.mean.dim, (x, [-1], True)), (aten.where.self, (x > 0, x, 0.0 * x[0])),
             (aten.cat.default, ([x, x], 1)), (aten.triu.default, (x, 1)), (aten.pow.Tensor_Scalar, (half, 2)),
             # a permuted input (channels last): elementwise outputs keep its layout, a layer norm's is contiguous
             (aten.gelu.default, (x.permute(0, 2, 1),)), (aten.mul.Tensor, (x.permute(2, 0, 1), x.permute(2, 0, 1))),
             (aten.native_layer_norm.default, (x.permute(0, 2, 1), [7], None, None, 1e-6)),
             (aten.native_batch_norm.default, (x, b[:7], b[:7], b[7:14], b[14:21], False, 0.1, 1e-5)),
             # Swin's shifted windows, a transposed tensor made contiguous, cosine attention's norm, products
             (aten.roll.default, (x, [3, -3], [1, 2])),
             (aten.clone.default, (x.transpose(1, 2),), {"memory_format": torch.contiguous_format}),
             (aten.linalg_vector_norm.default, (x, 2.0, [-1], True)), (aten.mm.default, (x[0], w.t())),
             (aten.bmm.default, (x, x.transpose(1, 2))), (aten.embedding.default, (w, positions.view(2, 4))),
             (aten.masked_fill.Scalar, (x, x > 0, -100.0)), (aten.cat.default, ([image, image], 1)),
             (aten.cat.default, ([torch.empty(0, device="meta"), x.transpose(1, 2)], -2)),  # a cache, empty at first
             # T5's relative position buckets and the masks made from positions: integers and booleans
             (aten.sub.Tensor, (positions[None], positions[:, None])), (aten.floor_divide.default, (positions, 2)),
             (aten.clamp_min.default, (positions, 0)), (aten.le.Tensor, (positions[None], positions[:, None])),
             (aten.ne.Scalar, (x, 0)), (aten.bitwise_and.Tensor, (positions > 0, positions < 5)),
             # a causal mask made for one sample, expanded to the batch, turned into additive values
             (aten.where.self, (torch.empty(1, 1, 7, 7, dtype=torch.bool, device="meta").expand(2, 1, 7, 7),
                                x.new_empty(()), x.new_empty(()))),
             (aten.arange.default, (8,), {"device": torch.device("meta"), "pin_memory": False}),
             (aten.arange.start_step, (1, 9, 2), {"dtype": torch.int32, "device": torch.device("meta")})]
    rules = shape_rules()
    for func, args, *keywords in calls:
        kwargs = keywords[0] if keywords else {}
        answer = rules[func](args, kwargs)
        assert answer is not None, func
        assert described(answer) == described(func(*args, **kwargs)), func
