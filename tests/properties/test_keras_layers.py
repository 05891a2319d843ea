"""Every Keras layer family paramcalc reads, in random valid configurations, against real Keras:
output shapes and trainable / non-trainable counts, exactly."""

from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paramcalc

from .oracle import compare_keras

keras = pytest.importorskip("keras")
L = keras.layers
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def later(make, *args, **kwargs):
    """A layer made when the test runs, not while hypothesis draws: Keras' constructors draw seeds from
    Python's random module, which a strategy must not touch."""
    return functools.partial(make, *args, **kwargs)


def check(input_shape, factories):
    model = keras.Sequential([keras.Input(input_shape)] + [make() for make in factories])
    est = paramcalc.estimate(model.get_config())
    compare_keras(model, est)


def check_functional(build):
    model = build()
    compare_keras(model, paramcalc.estimate(model))
    compare_keras(model, paramcalc.estimate(model.get_config()))


@st.composite
def conv_case(draw, kind: str):
    rank = draw(st.integers(1, 2 if kind in ("depthwise", "separable") else 3))
    k = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    strides = 1 if dilation > 1 else draw(st.integers(1, 3))
    paddings = ["valid", "same"] + (["causal"] if rank == 1 and kind == "conv" else [])
    padding = draw(st.sampled_from(paddings))
    spatial = tuple(draw(st.integers(dilation * (k - 1) + 1, 7)) for _ in range(rank))
    channels = draw(st.integers(1, 4))
    filters = draw(st.integers(1, 5))
    use_bias = draw(st.booleans())
    activation = draw(st.sampled_from(["linear", "relu", "tanh"]))
    kwargs = dict(kernel_size=k, strides=strides, padding=padding, dilation_rate=dilation, use_bias=use_bias,
                  activation=activation)
    if kind == "conv":
        groups = draw(st.sampled_from([g for g in (1, 2, 3) if channels % g == 0 and filters % g == 0]))
        layer = later(getattr(L, f"Conv{rank}D"), filters, groups=groups, **kwargs)
    elif kind == "transpose":
        if draw(st.booleans()):
            kwargs["output_padding"] = draw(st.integers(0, strides - 1))
        layer = later(getattr(L, f"Conv{rank}DTranspose"), filters, **kwargs)
    elif kind == "depthwise":
        layer = later(getattr(L, f"DepthwiseConv{rank}D"), depth_multiplier=draw(st.integers(1, 3)), **kwargs)
    else:
        layer = later(getattr(L, f"SeparableConv{rank}D"), filters, depth_multiplier=draw(st.integers(1, 2)), **kwargs)
    return spatial + (channels,), layer


@pytest.mark.parametrize("kind", ["conv", "transpose", "depthwise", "separable"])
@SETTINGS
@given(data=st.data())
def test_convolutions(kind, data):
    shape, make = data.draw(conv_case(kind))
    check(shape, [make])


@st.composite
def pool_case(draw):
    rank = draw(st.integers(1, 3))
    op = draw(st.sampled_from(["Max", "Average"]))
    if draw(st.booleans()):
        keepdims = draw(st.booleans())
        layer = later(getattr(L, f"Global{op}Pooling{rank}D"), keepdims=keepdims)
        spatial = tuple(draw(st.integers(1, 5)) for _ in range(rank))
    else:
        pool = draw(st.integers(1, 3))
        strides = draw(st.one_of(st.none(), st.integers(1, 3)))
        padding = draw(st.sampled_from(["valid", "same"]))
        layer = later(getattr(L, f"{op}Pooling{rank}D"), pool_size=pool, strides=strides, padding=padding)
        spatial = tuple(draw(st.integers(pool, 7)) for _ in range(rank))
    return spatial + (draw(st.integers(1, 3)),), layer


@SETTINGS
@given(pool_case())
def test_pools(case):
    shape, make = case
    check(shape, [make])


@st.composite
def norm_case(draw):
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 5)) for _ in range(rank))
    kind = draw(st.sampled_from(["batch", "layer", "group", "rms", "normalization"]))
    if kind == "batch":
        axis = draw(st.sampled_from([-1] + list(range(1, rank + 1))))
        layer = later(L.BatchNormalization, axis=axis, center=draw(st.booleans()), scale=draw(st.booleans()))
    elif kind == "layer":
        axes = draw(st.lists(st.sampled_from(list(range(1, rank + 1))), min_size=1, max_size=rank, unique=True))
        layer = later(L.LayerNormalization, axis=axes if len(axes) > 1 else axes[0], center=draw(st.booleans()),
                      scale=draw(st.booleans()), rms_scaling=draw(st.booleans()))
    elif kind == "group":
        channels = shape[-1]
        groups = draw(st.sampled_from([g for g in range(1, channels + 1) if channels % g == 0]))
        layer = later(L.GroupNormalization, groups=groups, center=draw(st.booleans()), scale=draw(st.booleans()))
    elif kind == "rms":
        layer = later(L.RMSNormalization)
    else:
        layer = later(L.Normalization, axis=-1)
    trainable = draw(st.booleans())
    return shape, later(_with_trainable, layer, trainable)


def _with_trainable(make, trainable: bool):
    layer = make()
    layer.trainable = trainable
    return layer


@SETTINGS
@given(norm_case())
def test_normalisation(case):
    shape, make = case
    check(shape, [make])


@st.composite
def sequence_case(draw):
    steps, features = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["SimpleRNN", "LSTM", "GRU"]))
    kwargs = dict(return_sequences=draw(st.booleans()), use_bias=draw(st.booleans()))
    if kind == "GRU":
        kwargs["reset_after"] = draw(st.booleans())
    units = draw(st.integers(1, 5))
    layer = later(getattr(L, kind), units, **kwargs)
    if draw(st.booleans()):
        layer = later(_bidirectional, layer, merge_mode=draw(st.sampled_from(["concat", "sum", "mul", "ave"])))
    layers = [layer]
    if draw(st.booleans()):
        layers = [later(L.Embedding, draw(st.integers(1, 20)), features)] + layers
        return (steps,), layers
    return (steps, features), layers


def _bidirectional(make, merge_mode: str):
    return L.Bidirectional(make(), merge_mode=merge_mode)


@SETTINGS
@given(sequence_case())
def test_embedding_and_recurrent(case):
    shape, layers = case
    check(shape, layers)


@SETTINGS
@given(st.sampled_from(["SimpleRNN", "LSTM", "GRU"]), st.booleans(), st.booleans())
def test_recurrent_states_in_a_functional_model(kind, sequences, bidirectional):
    def build():
        inp = keras.Input((4, 3))
        layer = getattr(L, kind)(5, return_sequences=sequences, return_state=True)
        if bidirectional:
            layer = L.Bidirectional(layer)
        outs = layer(inp)
        return keras.Model(inp, list(outs))
    check_functional(build)


@st.composite
def shape_case(draw):
    kind = draw(st.sampled_from(["pad", "crop", "upsample", "repeat", "time", "rescale", "prelu", "relu6",
                                 "masking"]))
    rank = draw(st.integers(1, 3))
    spatial = tuple(draw(st.integers(3, 6)) for _ in range(rank))
    shape = spatial + (draw(st.integers(1, 3)),)
    if kind == "pad":
        pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(rank))
        return shape, later(getattr(L, f"ZeroPadding{rank}D"), pads[0] if rank == 1 else pads)
    if kind == "crop":
        crops = tuple((draw(st.integers(0, 1)), draw(st.integers(0, 1))) for _ in range(rank))
        return shape, later(getattr(L, f"Cropping{rank}D"), crops[0] if rank == 1 else crops)
    if kind == "upsample":
        sizes = tuple(draw(st.integers(1, 3)) for _ in range(rank))
        return shape, later(getattr(L, f"UpSampling{rank}D"), sizes[0] if rank == 1 else sizes)
    if kind == "repeat":
        return (draw(st.integers(1, 5)),), later(L.RepeatVector, draw(st.integers(1, 4)))
    if kind == "time":
        return (draw(st.integers(1, 4)), draw(st.integers(1, 4))), later(_time_distributed_dense, draw(st.integers(1, 4)))
    if kind == "rescale":
        return shape, later(L.Rescaling, 0.5, offset=1.0)
    if kind == "prelu":
        shared = draw(st.lists(st.integers(1, rank + 1), unique=True, max_size=rank))
        return shape, later(L.PReLU, shared_axes=shared or None)
    if kind == "relu6":
        return shape, later(L.ReLU, max_value=6.0)
    return shape, later(L.Masking)


def _time_distributed_dense(units: int):
    return L.TimeDistributed(L.Dense(units))


@SETTINGS
@given(shape_case())
def test_shape_utilities(case):
    shape, make = case
    check(shape, [make])


@st.composite
def merge_case(draw):
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    kind = draw(st.sampled_from(["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
                                 "Concatenate", "Dot"]))
    return shape, kind, draw(st.integers(-rank, rank)), draw(st.integers(1, 5))


@SETTINGS
@given(merge_case())
def test_merges(case):
    shape, kind, axis, width = case

    def build():
        a, b = keras.Input(shape, name="a"), keras.Input(shape, name="b")
        x = L.Dense(width)(a)
        y = L.Dense(width)(b)
        if kind == "Concatenate":
            out = L.Concatenate(axis=axis if axis != 0 else -1)([x, y])
        elif kind == "Dot":
            out = L.Dot(axes=len(shape))([x, y])
        else:
            out = getattr(L, kind)()([x, y])
        return keras.Model([a, b], out)
    check_functional(build)


@st.composite
def attention_case(draw):
    tq, tv = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dq, dv, dk = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    heads, key_dim = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    value_dim = draw(st.one_of(st.none(), st.integers(1, 4)))
    output_shape = draw(st.one_of(st.none(), st.integers(1, 5)))
    with_key = draw(st.booleans())
    return tq, tv, dq, dv, dk, heads, key_dim, value_dim, output_shape, with_key, draw(st.booleans())


@SETTINGS
@given(attention_case())
def test_multi_head_attention(case):
    tq, tv, dq, dv, dk, heads, key_dim, value_dim, output_shape, with_key, use_bias = case

    def build():
        q, v = keras.Input((tq, dq), name="q"), keras.Input((tv, dv), name="v")
        inputs = [q, v]
        mha = L.MultiHeadAttention(heads, key_dim, value_dim=value_dim, output_shape=output_shape,
                                   use_bias=use_bias)
        if with_key:
            k = keras.Input((tv, dk), name="k")
            inputs.append(k)
            out = mha(q, v, key=k)
        else:
            out = mha(q, v)
        return keras.Model(inputs, out)
    check_functional(build)


@st.composite
def functional_graph(draw):
    """A random DAG of Dense / activation / merge nodes over two inputs, with a shared layer."""
    width = draw(st.integers(1, 4))
    steps = draw(st.lists(st.sampled_from(["dense", "relu", "add", "concat", "shared"]), min_size=1, max_size=6))
    picks = [draw(st.integers(0, 100)) for _ in range(2 * len(steps))]
    return width, steps, picks


@SETTINGS
@given(functional_graph(), st.booleans())
def test_random_functional_graphs(graph, nested):
    width, steps, picks = graph

    def build():
        a, b = keras.Input((width,), name="a"), keras.Input((width,), name="b")
        tensors = [a, b]
        shared = L.Dense(width, name="shared")
        for i, step in enumerate(steps):
            x = tensors[picks[2 * i] % len(tensors)]
            y = tensors[picks[2 * i + 1] % len(tensors)]
            if step == "dense":
                tensors.append(L.Dense(width)(x))
            elif step == "relu":
                tensors.append(L.Activation("relu")(x))
            elif step == "add":
                tensors.append(L.Add()([x, y]))
            elif step == "concat":
                tensors.append(L.Dense(width)(L.Concatenate()([x, y])))
            else:
                tensors.append(shared(x))
        model = keras.Model([a, b], [tensors[-1], tensors[len(tensors) // 2]])
        if not nested:
            return model
        outer_a, outer_b = keras.Input((width,), name="outer_a"), keras.Input((width,), name="outer_b")
        inner_out = model([outer_a, outer_b])
        return keras.Model([outer_a, outer_b], L.Dense(2)(inner_out[0]))
    check_functional(build)
