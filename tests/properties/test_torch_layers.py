"""Every torch module family paramcalc reads, in random valid configurations on the meta device, against
real torch: every output shape (tuple outputs included) and parameter / buffer counts, exactly; and
random fx-traceable modules built from functions and methods."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paramcalc

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BATCH = 2


def _shapes(value) -> list:
    if isinstance(value, torch.Tensor):
        return [tuple(value.shape)]
    if isinstance(value, (tuple, list)):
        return [s for v in value if v is not None for s in _shapes(v)]
    return []


def check_module(module, input_shapes, dtype=None, call=None):
    """One module called on meta inputs; paramcalc sees it alone (a one-layer model)."""
    module = module.to("meta")
    inputs = [torch.empty((BATCH,) + s, device="meta", dtype=dtype or torch.float32) for s in input_shapes]
    out = (call or module)(*inputs)
    est = paramcalc.estimate(module, input_shape=input_shapes if len(input_shapes) > 1 else input_shapes[0],
                             batch_size=BATCH)
    (row,) = est.layers
    expected = _shapes(out)
    assert list(row.output_shapes[:len(expected)]) == expected
    assert row.params == sum(p.numel() for p in module.parameters())
    assert row.trainable_params == sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert row.buffers == sum(b.numel() for b in module.buffers())


@st.composite
def conv_case(draw, kind: str):
    rank = draw(st.integers(1, 3))
    k = draw(st.integers(1, 3))
    stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    channels, out = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    groups = draw(st.sampled_from([g for g in (1, 2) if channels % g == 0 and out % g == 0]))
    bias = draw(st.booleans())
    spatial = tuple(draw(st.integers(dilation * (k - 1) + 1, 7)) for _ in range(rank))
    if kind == "conv":
        padding = draw(st.sampled_from(["int", "valid"] + (["same"] if stride == 1 else [])))
        pad = draw(st.integers(0, k // 2)) if padding == "int" else padding
        module = getattr(nn, f"Conv{rank}d")(channels, out, k, stride=stride, padding=pad, dilation=dilation,
                                             groups=groups, bias=bias)
    else:
        pad = draw(st.integers(0, (dilation * (k - 1)) // 2))
        output_padding = draw(st.integers(0, max(stride, dilation) - 1))
        module = getattr(nn, f"ConvTranspose{rank}d")(channels, out, k, stride=stride, padding=pad,
                                                      output_padding=output_padding, dilation=dilation,
                                                      groups=groups, bias=bias)
    return module, (channels,) + spatial


@pytest.mark.parametrize("kind", ["conv", "transpose"])
@SETTINGS
@given(data=st.data())
def test_convolutions(kind, data):
    module, shape = data.draw(conv_case(kind))
    check_module(module, [shape])


@st.composite
def pool_case(draw):
    rank = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["max", "avg", "adaptive_avg", "adaptive_max"]))
    channels = draw(st.integers(1, 3))
    if kind.startswith("adaptive"):
        spatial = tuple(draw(st.integers(1, 6)) for _ in range(rank))
        size = tuple(draw(st.one_of(st.none(), st.integers(1, 4))) for _ in range(rank))
        cls = getattr(nn, f"AdaptiveAvgPool{rank}d" if kind == "adaptive_avg" else f"AdaptiveMaxPool{rank}d")
        return cls(size if rank > 1 else size[0] or 1), (channels,) + spatial
    k = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 3))
    pad = draw(st.integers(0, k // 2))
    ceil = draw(st.booleans())
    dilation = draw(st.integers(1, 2)) if kind == "max" else 1
    spatial = tuple(draw(st.integers(dilation * (k - 1) + 1, 7)) for _ in range(rank))
    if kind == "max":
        module = getattr(nn, f"MaxPool{rank}d")(k, stride=stride, padding=pad, dilation=dilation, ceil_mode=ceil)
    else:
        module = getattr(nn, f"AvgPool{rank}d")(k, stride=stride, padding=pad, ceil_mode=ceil)
    return module, (channels,) + spatial


@SETTINGS
@given(pool_case())
def test_pools(case):
    module, shape = case
    check_module(module, [shape])


@settings(max_examples=150, deadline=None)  # cheap: each a one-layer estimate
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(0, 4), st.booleans(), st.booleans())
def test_pools_on_inputs_shorter_than_their_window(rank, length, kernel, pad, ceil, average):
    """Any input length against any window: torch's shape, or an error from both. With ceil_mode a window
    longer than the input still gives one output (Hugging Face's EfficientNet pools 18 x 18 with 2560)."""
    pad = min(pad, kernel // 2)
    kind = "AvgPool" if average else "MaxPool"
    module = getattr(nn, f"{kind}{rank}d")(kernel, stride=kernel, padding=pad, ceil_mode=ceil).to("meta")
    shape = (2,) + (length,) * rank
    try:
        expected = tuple(module(torch.empty((BATCH,) + shape, device="meta")).shape)
    except RuntimeError:
        with pytest.raises(paramcalc.ParamcalcError):
            paramcalc.estimate(module, input_shape=shape, batch_size=BATCH)
        return
    assert paramcalc.estimate(module, input_shape=shape, batch_size=BATCH).output_shape == expected


@st.composite
def norm_case(draw):
    kind = draw(st.sampled_from(["batch", "instance", "layer", "group", "rms"]))
    if kind == "instance":  # statistics per sample and channel; BatchNorm's weights and buffers
        rank = draw(st.integers(1, 3))
        channels = draw(st.integers(1, 4))
        module = getattr(nn, f"InstanceNorm{rank}d")(channels, affine=draw(st.booleans()),
                                                     track_running_stats=draw(st.booleans()))
        return module, (channels,) + tuple(draw(st.integers(2, 4)) for _ in range(rank))
    if kind == "batch":
        rank = draw(st.integers(0, 3))
        channels = draw(st.integers(1, 4))
        cls = getattr(nn, f"BatchNorm{max(rank, 1)}d")
        module = cls(channels, affine=draw(st.booleans()), track_running_stats=draw(st.booleans()))
        return module, (channels,) + tuple(draw(st.integers(1, 4)) for _ in range(rank))
    shape = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.integers(1, 3))))
    if kind == "group":
        channels = shape[0]
        groups = draw(st.sampled_from([g for g in range(1, channels + 1) if channels % g == 0]))
        return nn.GroupNorm(groups, channels, affine=draw(st.booleans())), shape
    tail = shape[len(shape) - draw(st.integers(1, len(shape))):]
    affine = draw(st.booleans())
    if kind == "layer":
        return nn.LayerNorm(tail, elementwise_affine=affine, bias=draw(st.booleans())), shape
    return nn.RMSNorm(tail, elementwise_affine=affine), shape


@SETTINGS
@given(norm_case())
def test_normalisation(case):
    module, shape = case
    check_module(module, [shape])


@st.composite
def recurrent_case(draw):
    cls = draw(st.sampled_from([nn.RNN, nn.LSTM, nn.GRU]))
    size, hidden = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    kwargs = dict(num_layers=draw(st.integers(1, 3)), bias=draw(st.booleans()),
                  batch_first=draw(st.booleans()), bidirectional=draw(st.booleans()))
    if cls is nn.LSTM and hidden > 1 and draw(st.booleans()):
        kwargs["proj_size"] = draw(st.integers(1, hidden - 1))
    steps = draw(st.integers(1, 4))
    return cls(size, hidden, **kwargs), (steps, size)


@SETTINGS
@given(recurrent_case())
def test_recurrent(case):
    module, shape = case
    # batch_first=False reads (time, batch, features): the leading axis is then the time axis
    check_module(module, [shape])


@SETTINGS
@given(st.integers(1, 30), st.integers(1, 6), st.integers(1, 4))
def test_embedding(vocab, dim, steps):
    module = nn.Embedding(vocab, dim)
    check_module(module, [(steps,)], dtype=torch.long)


@st.composite
def attention_case(draw):
    heads = draw(st.integers(1, 3))
    embed = heads * draw(st.integers(1, 3))
    kdim = draw(st.one_of(st.none(), st.integers(1, 5)))
    vdim = draw(st.one_of(st.none(), st.integers(1, 5)))
    module = nn.MultiheadAttention(embed, heads, bias=draw(st.booleans()), add_bias_kv=draw(st.booleans()),
                                   kdim=kdim, vdim=vdim, batch_first=draw(st.booleans()))
    tq, tk = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return module, [(tq, embed), (tk, kdim or embed), (tk, vdim or embed)]


@SETTINGS
@given(attention_case())
def test_multihead_attention(case):
    module, shapes = case
    if not module.batch_first:  # (length, batch, features): the batch axis is then the second one
        shapes = [(BATCH,) + s[1:] for s in shapes]
        lengths = [s[0] for s in case[1]]
        module = module.to("meta")
        inputs = [torch.empty((n, BATCH, s[-1]), device="meta") for n, s in zip(lengths, case[1])]
        out = module(*inputs)
        est = paramcalc.estimate(module, input_shape=[(BATCH, s[-1]) for s in case[1]], batch_size=lengths[0])
        assert est.layers[0].output_shapes[0] == tuple(out[0].shape)
        assert est.params == sum(p.numel() for p in module.parameters())
        return
    check_module(module, shapes)


@st.composite
def transformer_case(draw):
    heads = draw(st.integers(1, 2))
    d_model = heads * draw(st.integers(1, 3))
    ff = draw(st.integers(1, 6))
    decoder = draw(st.booleans())
    cls = nn.TransformerDecoderLayer if decoder else nn.TransformerEncoderLayer
    layer = cls(d_model, heads, dim_feedforward=ff, batch_first=True, bias=draw(st.booleans()),
                activation=draw(st.sampled_from(["relu", "gelu"])), norm_first=draw(st.booleans()))
    stack = draw(st.integers(0, 2))
    if stack:
        norm = nn.LayerNorm(d_model) if draw(st.booleans()) else None
        module = (nn.TransformerDecoder if decoder else nn.TransformerEncoder)(
            layer, stack, norm=norm, **({} if decoder else {"enable_nested_tensor": False}))
    else:
        module = layer
    steps, memory = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return module, [(steps, d_model)] + ([(memory, d_model)] if decoder else [])


@SETTINGS
@given(transformer_case())
def test_transformer_layers(case):
    module, shapes = case
    check_module(module, shapes)


@st.composite
def shape_case(draw):
    kind = draw(st.sampled_from(["pad", "upsample", "prelu", "pixel_shuffle", "pixel_unshuffle", "glu"]))
    if kind == "glu":  # an even axis halved; dim counts the batch axis as 0, negative or not
        rank = draw(st.integers(1, 3))
        dims = [draw(st.integers(1, 3)) for _ in range(rank)]
        axis = draw(st.integers(1, rank))
        dims[axis - 1] *= 2
        return nn.GLU(dim=draw(st.sampled_from([axis, axis - rank - 1]))), tuple(dims)
    if kind.startswith("pixel"):  # (C, H, W): channels divisible by r*r to shuffle, sides by r to unshuffle
        r = draw(st.integers(1, 3))
        if kind == "pixel_shuffle":
            return nn.PixelShuffle(r), (draw(st.integers(1, 3)) * r * r, draw(st.integers(1, 4)),
                                        draw(st.integers(1, 4)))
        return nn.PixelUnshuffle(r), (draw(st.integers(1, 3)), draw(st.integers(1, 3)) * r,
                                      draw(st.integers(1, 3)) * r)
    rank = draw(st.integers(1, 3))
    shape = (draw(st.integers(1, 3)),) + tuple(draw(st.integers(2, 5)) for _ in range(rank))
    if kind == "pad":
        cls = draw(st.sampled_from(["ZeroPad", "ConstantPad", "ReplicationPad"]))
        amounts = tuple(draw(st.integers(0, 2)) for _ in range(2 * rank))
        if cls == "ConstantPad":
            return getattr(nn, f"{cls}{rank}d")(amounts, 0.0), shape
        return getattr(nn, f"{cls}{rank}d")(amounts), shape
    if kind == "upsample":
        if draw(st.booleans()):
            return nn.Upsample(scale_factor=draw(st.sampled_from([1, 2, 3, 1.5]))), shape
        return nn.Upsample(size=tuple(draw(st.integers(1, 6)) for _ in range(rank))), shape
    return nn.PReLU(draw(st.sampled_from([1, shape[0]]))), shape


@SETTINGS
@given(shape_case())
def test_shape_utilities(case):
    module, shape = case
    check_module(module, [shape])


# -- random fx-traceable modules -------------------------------------------------------------------------------
OPS = ["linear", "relu", "gelu_fn", "glu_fn", "flatten_view", "permute", "transpose", "cat", "add_self", "mul_scalar",
       "matmul", "unsqueeze_squeeze", "mean", "softmax", "index", "shared", "param_add", "reshape_size",
       "chunk", "split", "check"]


class Program(nn.Module):
    """A module whose forward interprets a list of ops: fx unrolls it into a straight-line graph."""

    def __init__(self, ops, width):
        super().__init__()
        self.ops = ops
        self.linears = nn.ModuleList(nn.Linear(width, width) for _ in ops)
        self.shared = nn.Linear(width, width)
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x):
        for i, op in enumerate(self.ops):
            if op == "linear":
                x = self.linears[i](x)
            elif op == "relu":
                x = torch.relu(x)
            elif op == "gelu_fn":
                x = F.gelu(x)
            elif op == "glu_fn":
                x = F.glu(torch.cat([x, x], dim=-1), dim=-1)
            elif op == "flatten_view":
                x = x.view(x.size(0), -1, x.shape[-1])
            elif op == "permute":
                x = x.permute(0, 2, 1).contiguous().permute(0, 2, 1)
            elif op == "transpose":
                x = x.transpose(1, 2).transpose(1, 2)
            elif op == "cat":
                x = self.linears[i](torch.cat([x, x], dim=1))
            elif op == "add_self":
                x = x + x * x
            elif op == "mul_scalar":
                x = x * 0.5 + 1
            elif op == "matmul":
                x = torch.matmul(x, x.transpose(-1, -2)) @ x
            elif op == "unsqueeze_squeeze":
                x = x.unsqueeze(1).squeeze(1)
            elif op == "mean":
                x = x + x.mean(dim=1, keepdim=True)
            elif op == "softmax":
                x = F.softmax(x, dim=-1)
            elif op == "index":
                x = x[:, :1] + x[:, -1:]
            elif op == "shared":
                x = self.shared(self.shared(x))
            elif op == "param_add":
                x = x + self.bias
            elif op == "reshape_size":
                b, t, d = x.shape
                x = x.reshape(b, t * d).reshape(b, t, d)
            elif op == "chunk":
                a, b = torch.cat([x, x], dim=-1).chunk(2, dim=-1)
                x = a * b
            elif op == "split":
                a, b = torch.split(torch.cat([x, x, x], dim=1), [x.shape[1], 2 * x.shape[1]], dim=1)
                x = a + b[:, :1]
            elif op == "check":
                torch._assert(x.shape[-1] > 0, "features")
        return x.flatten(1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(OPS), min_size=1, max_size=6), st.integers(1, 4), st.integers(1, 4))
def test_random_traced_modules(ops, width, steps):
    module = Program(ops, width).to("meta")
    out = module(torch.empty(BATCH, steps, width, device="meta"))
    est = paramcalc.estimate(module, input_shape=(steps, width), batch_size=BATCH)
    assert est.output_shape == tuple(out.shape)
    # every parameter the module holds, called or not, as torch counts them; the ones the forward never
    # called are named in a note
    assert est.params == sum(p.numel() for p in module.parameters())
    used = {id(p) for i, op in enumerate(ops) if op in ("linear", "cat") for p in module.linears[i].parameters()}
    used |= {id(p) for p in module.shared.parameters()} if "shared" in ops else set()
    used |= {id(module.bias)} if "param_add" in ops else set()
    unused = sum(p.numel() for p in module.parameters() if id(p) not in used)
    assert any(f"{unused:,} parameters belong to modules the forward did not call" in n for n in est.notes) == (unused > 0)


def test_every_torch_builtin_is_covered():
    """Each module class the front-end translates is drawn by a property test here or in
    test_torch_properties.py."""
    from paramcalc.frontends.torch_modules import BUILTINS

    drawn = {"Linear", "Identity", "Flatten", "Unflatten", "Softmax", "LogSoftmax", "PReLU",
             "MultiheadAttention", "Embedding", "LayerNorm", "GroupNorm", "RMSNorm", "Upsample",
             "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder", "TransformerDecoder",
             "RNN", "LSTM", "GRU", "Dropout", "AlphaDropout", "ReLU", "ReLU6", "LeakyReLU", "ELU", "CELU", "SELU",
             "GELU", "SiLU", "Mish", "Sigmoid", "Tanh", "Softplus", "Softsign", "Hardtanh", "Hardsigmoid",
             "Hardswish", "PixelShuffle", "PixelUnshuffle", "GLU"}
    for r in (1, 2, 3):
        drawn |= {f"Conv{r}d", f"ConvTranspose{r}d", f"MaxPool{r}d", f"AvgPool{r}d", f"AdaptiveAvgPool{r}d",
                  f"AdaptiveMaxPool{r}d", f"BatchNorm{r}d", f"InstanceNorm{r}d", f"ZeroPad{r}d", f"ConstantPad{r}d",
                  f"ReplicationPad{r}d"}
    # same rules as drawn classes, checked by unit tests
    elsewhere = {"Dropout1d", "Dropout2d", "Dropout3d", "FeatureAlphaDropout"} | \
        {f"{k}Pad{r}d" for k in ("Reflection", "Circular") for r in (1, 2, 3)}
    assert {name.rsplit(".", 1)[1] for name in BUILTINS} == drawn | elsewhere


class SizeBranching(nn.Module):
    """A Program behind a Python branch on a size, which torch.fx cannot trace: paramcalc runs the
    forward on meta tensors and records ATen operations (the ``captured`` kind)."""

    def __init__(self, program):
        super().__init__()
        self.program = program

    def forward(self, x):
        if x.shape[-1] > 0:
            x = self.program(x)
        return x


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(OPS), min_size=1, max_size=6), st.integers(1, 4), st.integers(1, 4))
def test_random_modules_read_by_running_them(ops, width, steps):
    from torch.utils.flop_counter import FlopCounterMode

    module = SizeBranching(Program(ops, width)).to("meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = module(torch.empty(BATCH, steps, width, device="meta"))
    est = paramcalc.estimate(module, input_shape=(steps, width), batch_size=BATCH)
    assert any("meta tensors" in note for note in est.notes)  # read by running it, not traced
    assert est.output_shape == tuple(out.shape)
    assert est.params == sum(p.numel() for p in module.parameters())
    assert 2 * est.macs_per_batch == counter.get_total_flops()
