"""Random Keras Sequential stacks: every layer's output shape and parameter counts equal Keras', exactly."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paramcalc

from .shapes import factorization, sizes

keras = pytest.importorskip("keras")
L = keras.layers

KERAS_ACTIVATIONS = ["relu", "gelu", "sigmoid", "tanh", "softmax", "linear", "elu", "selu", "softplus",
                     "softsign", "swish", "silu", "exponential", "hard_sigmoid", "leaky_relu", "relu6",
                     "mish", "log_softmax", "hard_silu", None]


@st.composite
def keras_stack(draw):
    """(per-sample input shape, list of layer factories) for a valid random stack."""
    shape = [draw(sizes) for _ in range(draw(st.integers(1, 3)))]
    input_shape = tuple(shape)
    factories = []
    for _ in range(draw(st.integers(1, 6))):
        options = ["dense", "dense", "flatten", "reshape", "activation", "relu", "leaky_relu", "elu",
                   "softmax", "dropout", "identity", "permute"]
        if len(shape) == 2:
            options.append("spatial_dropout1d")
        kind = draw(st.sampled_from(options))
        if kind == "dense":
            units = draw(st.integers(1, 6))
            act = draw(st.sampled_from(KERAS_ACTIVATIONS))
            bias = draw(st.booleans())
            trainable = draw(st.sampled_from([True, True, False]))
            factories.append(lambda u=units, a=act, b=bias, t=trainable: L.Dense(u, activation=a, use_bias=b,
                                                                               trainable=t))
            shape[-1] = units
        elif kind == "flatten":
            factories.append(L.Flatten)
            shape = [math.prod(shape)]
        elif kind == "reshape":
            target = draw(factorization(math.prod(shape)))
            factories.append(lambda t=target: L.Reshape(t))
            known = math.prod(d for d in target if d != -1)
            shape = [math.prod(shape) // known if d == -1 else d for d in target]
        elif kind == "activation":
            act = draw(st.sampled_from(KERAS_ACTIVATIONS[:-1]))
            factories.append(lambda a=act: L.Activation(a))
        elif kind == "relu":
            factories.append(L.ReLU)
        elif kind == "leaky_relu":
            factories.append(L.LeakyReLU)
        elif kind == "elu":
            factories.append(L.ELU)
        elif kind == "softmax":
            factories.append(L.Softmax)
        elif kind == "dropout":
            rate = draw(st.sampled_from([0.0, 0.1, 0.5]))
            factories.append(lambda r=rate: L.Dropout(r))
        elif kind == "spatial_dropout1d":
            factories.append(lambda: L.SpatialDropout1D(0.2))
        elif kind == "identity":
            factories.append(L.Identity)
        elif kind == "permute":
            order = draw(st.permutations(range(1, len(shape) + 1)))
            factories.append(lambda o=tuple(order): L.Permute(o))
            shape = [shape[i - 1] for i in order]
    return input_shape, factories


def _weights_size(weights) -> int:
    return sum(math.prod(int(d) for d in w.shape) for w in weights)


def _as_keras_shape(est, shape) -> tuple:
    return tuple(None if est.format_dim(d) == "None" else d for d in shape)


def _compare(model, est) -> None:
    assert len(model.layers) == len(est.layers)
    for layer, row in zip(model.layers, est.layers):
        assert row.name == layer.name
        assert _as_keras_shape(est, row.output_shape) == tuple(layer.output.shape), row.name
        assert row.params == layer.count_params(), row.name
        assert row.trainable_params == _weights_size(layer.trainable_weights), row.name
        assert row.non_trainable_params == _weights_size(layer.non_trainable_weights), row.name
    assert est.params == model.count_params()
    assert est.trainable_params == _weights_size(model.trainable_weights)
    assert est.non_trainable_params == _weights_size(model.non_trainable_weights)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keras_stack(), st.sampled_from(["object", "config", "unbuilt"]))
def test_random_keras_stacks_match_keras(stack, route):
    input_shape, factories = stack
    layers = [make() for make in factories]
    if route == "unbuilt":
        model = keras.Sequential(layers)
        est = paramcalc.estimate(model, input_shape=input_shape)  # estimated before Keras builds it
        model.build((None,) + input_shape)
    else:
        model = keras.Sequential([keras.Input(input_shape)] + layers)
        est = paramcalc.estimate(model if route == "object" else model.get_config())
    assert est.framework == "keras"
    _compare(model, est)


def test_every_keras_builtin_is_covered_by_a_property_test():
    """Each Keras class the front-end translates is drawn by a property test (here or in
    test_keras_layers.py), or listed with the reason it is checked elsewhere."""
    from paramcalc.frontends.keras import _AUGMENTATIONS, BUILTINS

    drawn = {"Dense", "Flatten", "Reshape", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax",
             "Dropout", "SpatialDropout1D", "Identity", "Permute",
             # test_keras_layers.py
             "PReLU", "Masking", "Embedding", "SimpleRNN", "LSTM", "GRU", "Bidirectional", "TimeDistributed",
             "MultiHeadAttention", "RepeatVector", "Rescaling", "Normalization", "BatchNormalization",
             "LayerNormalization", "GroupNormalization", "RMSNormalization",
             "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot",
             "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D"}
    for r in (1, 2, 3):
        drawn |= {f"Conv{r}D", f"Conv{r}DTranspose", f"MaxPooling{r}D", f"AveragePooling{r}D",
                  f"GlobalMaxPooling{r}D", f"GlobalAveragePooling{r}D", f"ZeroPadding{r}D", f"Cropping{r}D",
                  f"UpSampling{r}D"}
    # Same rule as a drawn class (identity in shape, no weights), checked in test_keras_frontend.py.
    checked_elsewhere = {"SpatialDropout2D", "SpatialDropout3D", "GaussianDropout", "AlphaDropout",
                         "ActivityRegularization",
                         "Lambda",  # never run, so taken at its declared shape: tests/test_files.py
                         # Keras' own application layers: tests/test_coverage_keras_applications.py
                         "LayerScale", "CustomScaleLayer",
                         # every class in both data formats, every equation form, every rank, each against a
                         # real call or Keras' shapes: test_keras_frontend.py
                         *_AUGMENTATIONS, "Resizing", "CenterCrop", "RandomCrop", "EinsumDense",
                         "GroupQueryAttention", "GroupedQueryAttention", "Attention", "AdditiveAttention",
                         *(f"Adaptive{op}Pooling{r}D" for op in ("Average", "Max") for r in (1, 2, 3)),
                         *(f"ConvLSTM{r}D" for r in (1, 2, 3)),
                         # both calls, tied and untied, live and from the config: test_keras_frontend.py
                         "ReversibleEmbedding"}
    assert set(BUILTINS) == drawn | checked_elsewhere


class _Mix(keras.layers.Layer):
    """A class paramcalc has no rule for: a (d, d) kernel on the last axis, a frozen (d,) offset."""

    def __init__(self, frozen_offset: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.frozen_offset = frozen_offset

    def build(self, shape):
        self.kernel = self.add_weight(shape=(shape[-1], shape[-1]), name="kernel")
        if self.frozen_offset:
            self.offset = self.add_weight(shape=(shape[-1],), name="offset", trainable=False)

    def call(self, x):
        y = keras.ops.matmul(x, self.kernel)
        return y + self.offset if self.frozen_offset else y


class _Widen(keras.layers.Layer):
    """A class paramcalc has no rule for that changes the last axis: (d, units) kernel, (units,) bias."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, shape):
        self.kernel = self.add_weight(shape=(shape[-1], self.units), name="kernel")
        self.bias = self.add_weight(shape=(self.units,), name="bias")

    def call(self, x):
        return keras.ops.matmul(x, self.kernel) + self.bias


class _Twist(keras.layers.Layer):
    """A class paramcalc has no rule for, with no weights."""

    def call(self, x):
        return keras.ops.sin(x)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keras_stack(), st.data())
def test_random_stacks_with_classes_without_a_rule_match_keras(stack, data):
    """A live model's layers of classes paramcalc has no rule for take Keras' shapes and their built
    weights: every row still equals Keras, exactly."""
    input_shape, factories = stack
    layers = [make() for make in factories]
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(layers)))
        foreign = data.draw(st.sampled_from([lambda: _Mix(frozen_offset=True), lambda: _Mix(), _Twist]))
        layers.insert(position, foreign())
    if data.draw(st.booleans()):
        layers.append(_Widen(data.draw(st.integers(1, 5))))
    model = keras.Sequential([keras.Input(input_shape)] + layers)
    est = paramcalc.estimate(model)
    assert {row.kind for row in est.layers} >= {"foreign"}
    _compare(model, est)
