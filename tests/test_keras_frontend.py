"""The Keras front-end against real Keras: configs read as data, never built by paramcalc."""

from __future__ import annotations

import math

import pytest

import paramcalc
from paramcalc import SpecError, UnknownLayerError, estimate

keras = pytest.importorskip("keras")
L = keras.layers


def seed_keras(variant: str, features: int | None, with_input: bool = True):
    head = [L.Dense(300, activation="relu")]
    tail = [L.Dense(300, activation="relu"), L.Dense(100, activation="relu"), L.Dense(1)]
    layers = head + ([L.Flatten()] if variant == "reshaped_flatten" else []) + tail
    shape = (features,) if variant == "flat" else (features, 1)
    return keras.Sequential(([keras.Input(shape)] if with_input else []) + layers)


@pytest.mark.parametrize("variant", paramcalc.SEED_VARIANTS)
def test_seed_models_in_real_keras(variant):
    model = seed_keras(variant, 100)
    est = estimate(model, target_shape=())
    assert est.params == model.count_params()
    assert est.params == estimate(paramcalc.seed_model(variant, 100)).params
    assert [r.output_shape[1:] for r in est.layers] == [tuple(l.output.shape)[1:] for l in model.layers]


def test_full_size_seed_from_an_unbuilt_model_allocates_nothing():
    model = seed_keras("reshaped_flatten", None, with_input=False)
    assert not model.built
    est = estimate(model, input_shape=(20020, 1))
    assert est.params == 1_801_831_101
    assert not model.built  # paramcalc read the config only


def test_input_shape_override_is_noted():
    est = estimate(seed_keras("flat", 20020), input_shape=(20020, 1))
    assert est.params == 121_101
    assert any("replaces the model's declared input (20020,)" in n for n in est.notes)


def test_unbuilt_model_without_input_shape_is_a_clear_error():
    with pytest.raises(SpecError, match="declares no input shape"):
        estimate(keras.Sequential([L.Dense(3)]))


def test_serialized_form_and_get_config_agree():
    model = seed_keras("flat", 50)
    a = estimate(model.get_config())
    b = estimate(keras.saving.serialize_keras_object(model))
    assert a.params == b.params == model.count_params()


def test_legacy_keras2_config():
    config = {
        "name": "legacy",
        "layers": [
            {"class_name": "Dense", "config": {"name": "d1", "units": 300, "activation": "relu",
                                               "use_bias": True, "batch_input_shape": [None, 100, 1],
                                               "dtype": "float32", "trainable": True}},
            {"class_name": "Flatten", "config": {"name": "f", "data_format": "channels_last"}},
            {"class_name": "Dense", "config": {"name": "d2", "units": 1, "trainable": False}},
        ],
    }
    est = estimate(config)
    assert est.params == 600 + 30001
    assert est.non_trainable_params == 30001
    assert [r.name for r in est.layers] == ["d1", "f", "d2"]


def test_frozen_and_nested_models():
    inner = keras.Sequential([L.Dense(4), L.Dense(5)], name="inner")
    inner.trainable = False
    outer = keras.Sequential([keras.Input((3,)), inner, L.Dense(2)])
    est = estimate(outer)
    assert est.params == outer.count_params() == 53
    assert est.non_trainable_params == 41 and est.trainable_params == 12
    assert [r.name for r in est.layers][:2] == [f"inner/{l.name}" for l in inner.layers]


@pytest.mark.parametrize("make,shape", [
    (lambda: L.SpatialDropout2D(0.2), (4, 4, 3)),
    (lambda: L.SpatialDropout3D(0.2), (2, 4, 4, 3)),
    (lambda: L.GaussianDropout(0.2), (5,)),
    (lambda: L.AlphaDropout(0.2), (5,)),
    (lambda: L.ActivityRegularization(), (5, 2)),
], ids=["SpatialDropout2D", "SpatialDropout3D", "GaussianDropout", "AlphaDropout", "ActivityRegularization"])
def test_shape_preserving_classes(make, shape):
    model = keras.Sequential([keras.Input(shape), make()])
    est = estimate(model)
    assert est.output_shape[1:] == tuple(model.layers[0].output.shape)[1:]
    assert est.params == 0


@pytest.mark.parametrize("class_name", ["os.system", "keras.models.load_model", "MyCustomLayer"])
def test_unknown_classes_are_named_never_imported(class_name):
    config = {"layers": [{"class_name": class_name, "module": "builtins", "config": {"name": "x"}}],
              "build_input_shape": [None, 3]}
    with pytest.raises(UnknownLayerError) as info:
        estimate(config)
    assert class_name in str(info.value) and "register_keras_layer" in str(info.value)


def test_custom_activation_function_is_refused_clearly():
    config = {"layers": [{"class_name": "Dense", "config": {"name": "d", "units": 3,
                                                            "activation": {"class_name": "my_act"}}}],
              "build_input_shape": [None, 3]}
    with pytest.raises(paramcalc.ParamcalcError, match="my_act"):
        estimate(config)


def test_functional_model_with_two_inputs_and_outputs():
    a, b = keras.Input((3,), name="a"), keras.Input((5,), name="b")
    shared = L.Dense(4, name="shared")
    x, y = shared(a), L.Dense(3)(b)
    model = keras.Model([a, b], [L.Concatenate()([x, y]), shared(L.Dense(3)(b))])
    est = estimate(model)
    assert est.params == model.count_params()
    assert [s[1:] for s in est.output_shapes] == [(7,), (4,)]
    assert est.row("shared@1").shared_with == "shared" and est.row("shared@1").params == 0
    concrete = estimate(model, input_shape={"a": (3,), "b": (5,)}, batch_size=2)
    assert concrete.output_shapes[0] == (2, 7)


def test_subclassed_models_are_refused_with_a_clear_message():
    class Custom(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(SpecError, match="subclassed"):
        estimate(Custom())


def test_mixed_precision_params_stay_float32_sized():
    model = keras.Sequential([keras.Input((10,)), L.Dense(4)])
    config = model.get_config()
    config["dtype"] = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "mixed_float16"}}
    est = estimate(config)
    assert est.dtype == "mixed_float16" and est.param_bytes == 44 * 4


def test_registering_a_keras_class():
    paramcalc.register_keras_layer("Doubling", lambda c: paramcalc.Dense(c["width"] * 2))
    config = {"layers": [{"class_name": "Doubling", "config": {"name": "dbl", "width": 3}}],
              "build_input_shape": [None, 4]}
    assert estimate(config).params == 4 * 6 + 6
    assert math.prod(estimate(config).output_shape[1:]) == 6


def test_legacy_keras2_functional_config():
    config = {
        "name": "legacy_functional",
        "layers": [
            {"class_name": "InputLayer", "name": "in_a", "config": {"batch_input_shape": [None, 8], "name": "in_a"},
             "inbound_nodes": []},
            {"class_name": "Dense", "name": "d1", "config": {"name": "d1", "units": 4},
             "inbound_nodes": [[["in_a", 0, 0, {}]]]},
            {"class_name": "Dense", "name": "d2", "config": {"name": "d2", "units": 4},
             "inbound_nodes": [[["in_a", 0, 0, {}]]]},
            {"class_name": "Add", "name": "sum", "config": {"name": "sum"},
             "inbound_nodes": [[["d1", 0, 0, {}], ["d2", 0, 0, {}]]]},
        ],
        "input_layers": [["in_a", 0, 0]],
        "output_layers": [["sum", 0, 0]],
    }
    est = estimate(config)
    assert est.params == 2 * (8 * 4 + 4)
    assert est.output_shape[1:] == (4,)
    assert [r.name for r in est.layers] == ["d1", "d2", "sum"]


def test_shared_layer_weights_belong_to_its_first_declared_call():
    # the second call reads a model input, so it comes first in topological order; Keras still names
    # the first call "shared" and counts the weights there
    a, b = keras.Input((1,), name="a"), keras.Input((1,), name="b")
    shared = L.Dense(1, name="shared")
    first = shared(L.Dense(1)(a))
    second = shared(a)
    model = keras.Model([a, b], [L.Dense(1)(second), first])
    rows = {r.name: r for r in estimate(model).layers}
    assert (rows["shared"].params, rows["shared"].shared_with) == (shared.count_params(), None)
    assert (rows["shared@1"].params, rows["shared@1"].shared_with) == (0, "shared")
    assert estimate(model).params == model.count_params()


KERAS_OPTIMIZERS = {"adam": lambda: keras.optimizers.Adam(), "adamw": lambda: keras.optimizers.AdamW(),
                    "sgd": lambda: keras.optimizers.SGD(), "momentum": lambda: keras.optimizers.SGD(momentum=0.9),
                    "rmsprop": lambda: keras.optimizers.RMSprop(), "adagrad": lambda: keras.optimizers.Adagrad()}


@pytest.mark.parametrize("optimizer", sorted(KERAS_OPTIMIZERS))
@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16", "bfloat16"])
def test_optimizer_state_bytes_as_keras_keeps_them(optimizer, precision):
    # Keras makes each slot like its variable: 32-bit under the mixed policy, 16-bit in a 16-bit model
    import numpy as np

    layers = [L.Dense(8, activation="relu", dtype=precision), L.Dense(3, dtype=precision)]
    model = keras.Sequential([keras.Input((12,))] + layers)
    opt = KERAS_OPTIMIZERS[optimizer]()
    model.compile(optimizer=opt, loss="mse")
    model.train_on_batch(np.zeros((4, 12), "float32"), np.zeros((4, 3), "float32"))
    slots = [v for v in opt.variables if v.name not in ("iteration", "learning_rate")]
    state = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in slots)
    est = estimate(model, input_shape=(12,), batch_size=4, optimizer=optimizer, dtype=precision)
    assert est.training.memory.optimizer == state


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16", "bfloat16"])
def test_weight_bytes_as_keras_holds_them(precision):
    # the moving statistics are non-trainable weights of the policy's variable dtype
    import numpy as np

    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(8, 3, dtype=precision),
                              L.BatchNormalization(dtype=precision), L.Flatten(), L.Dense(4, dtype=precision)])
    held = sum(math.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.weights)
    est = estimate(model, input_shape=(8, 8, 3), batch_size=2, optimizer="sgd", dtype=precision)
    assert est.training.memory.weights == held


_AUGMENTATION_ARGUMENTS = {"RandomRotation": (0.1,), "RandomZoom": (0.1,), "RandomTranslation": (0.1, 0.1),
                           "RandomContrast": (0.1,), "RandomBrightness": (0.1,), "RandomPosterization": (4,),
                           "GaussianNoise": (0.1,), "RandomColorDegeneration": (0.5,), "RandomHue": (0.1,),
                           "RandomSaturation": (0.1,), "RandomSharpness": (0.1,), "MaxNumBoundingBoxes": (4,),
                           "Resizing": (16, 20), "CenterCrop": (16, 20), "RandomCrop": (16, 20)}


@pytest.mark.parametrize("channels", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", sorted({*_AUGMENTATION_ARGUMENTS, "RandomFlip", "RandomShear", "RandomPerspective",
                                         "RandomElasticTransform", "RandomColorJitter", "RandomGrayscale",
                                         "RandomInvert", "RandomErasing", "RandomGaussianBlur", "Solarization",
                                         "AutoContrast", "Equalization", "AugMix", "RandAugment", "CutMix", "MixUp",
                                         "ContrastLimitedAdaptiveHistogramEqualization"}))
def test_preprocessing_and_augmentation_layers_match_keras(name, channels):
    """Keras' image preprocessing and augmentation layers (often the first layers of an image model),
    from the config and live: the output shape Keras gives, and no weights."""
    if name == "GaussianNoise" and channels == "channels_first":
        pytest.skip("GaussianNoise has no data format")
    kwargs = {} if name == "GaussianNoise" else {"data_format": channels}
    try:
        layer = getattr(L, name)(*_AUGMENTATION_ARGUMENTS.get(name, ()), **kwargs)
        shape = (24, 30, 3) if channels == "channels_last" else (3, 24, 30)
        model = keras.Sequential([keras.Input(shape), layer, L.Conv2D(4, 3, data_format=channels)])
    except (ValueError, NotImplementedError) as error:  # Keras' own refusal of that data format
        pytest.skip(f"Keras refuses {name}({channels}): {str(error).splitlines()[0][:80]}")
    for source in (model, model.get_config()):
        est = estimate(source, batch_size=2)
        assert est.params == model.count_params()
        assert [r.output_shape for r in est.layers] == [(2, *l.output.shape[1:]) for l in model.layers]
        assert est.layers[0].type == name  # a rule, not Keras' shapes with an estimated cost


@pytest.mark.parametrize("equation, output_shape, bias_axes, input_shape", [
    ("abc,cd->abd", (None, 32), "d", (10, 64)),             # a Dense on the last axis
    ("abc,cde->abde", (None, 8, 16), "de", (10, 64)),       # attention's query heads
    ("abcd,cde->abe", (None, 64), "e", (10, 8, 16)),        # attention's output projection
    ("abc,cd->abd", (10, 32), "bd", (10, 64)),              # a bias per position
    ("...b,bc->...c", (32,), "c", (5, 7, 64)),              # "..." on the left: the batch and the rows
    ("ab...,bc->ac...", (32,), "c", (64, 7)),               # "..." on the right
    ("ab,bc->ac", 32, None, (64,)),                         # an int output_shape
])
def test_einsum_dense_matches_keras_and_counts_the_products_torch_counts(equation, output_shape, bias_axes, input_shape):
    """EinsumDense from the config and live: the output shape of a real call, each weight's shape, and
    2 x MACs equal to torch's FlopCounterMode count of the same einsum."""
    import numpy as np

    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    model = keras.Sequential([keras.Input(input_shape), L.EinsumDense(equation, output_shape, bias_axes=bias_axes,
                                                                      activation="relu")])
    output = model(np.zeros((2, *input_shape), "float32"))
    kernel = model.layers[0].weights[0]
    counter = FlopCounterMode(display=False)
    with counter:
        torch.einsum(equation, torch.zeros(2, *input_shape), torch.zeros(tuple(kernel.shape)))
    for source in (model, model.get_config()):
        est = estimate(source, batch_size=2)
        (row,) = est.layers
        assert row.output_shape == tuple(output.shape) and est.params == model.count_params()
        assert [w.shape for w in row.weights] == [tuple(w.shape) for w in model.layers[0].weights]
        assert 2 * row.macs_per_batch == counter.get_total_flops()


@pytest.mark.parametrize("channels", ["channels_last", "channels_first"])
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("op", ["Average", "Max"])
def test_adaptive_pooling_matches_keras(op, rank, channels):
    spatial = (9, 7, 5)[:rank]
    shape = (*spatial, 4) if channels == "channels_last" else (4, *spatial)
    layer = getattr(L, f"Adaptive{op}Pooling{rank}D")((3, 2, 1)[:rank] if rank > 1 else 3, data_format=channels)
    model = keras.Sequential([keras.Input(shape), layer])
    for source in (model, model.get_config()):
        est = estimate(source, batch_size=2)
        assert est.output_shape == (2, *model.layers[0].output.shape[1:]) and est.params == 0


@pytest.mark.parametrize("kv_heads, use_bias", [(2, True), (8, False), (1, True)])
def test_grouped_query_attention_matches_keras(kv_heads, use_bias):
    """Keras GroupedQueryAttention from the config and live: every weight's shape, the output of a real
    call; with as many key and value heads as query heads, the work of a MultiHeadAttention."""
    import numpy as np

    query, value = keras.Input((10, 64)), keras.Input((12, 64))
    layer = L.GroupQueryAttention(head_dim=16, num_query_heads=8, num_key_value_heads=kv_heads, use_bias=use_bias)
    model = keras.Model([query, value], layer(query, value))
    output = model([np.zeros((2, 10, 64), "float32"), np.zeros((2, 12, 64), "float32")])
    for source in (model, model.get_config()):
        est = estimate(source, batch_size=2)
        (row,) = est.layers
        assert est.params == model.count_params() and row.output_shape == tuple(output.shape)
        assert sorted(w.shape for w in row.weights) == sorted(tuple(w.shape) for w in layer.weights)
    if kv_heads == 8:
        heads = keras.Model([query, value], L.MultiHeadAttention(8, 16, use_bias=use_bias)(query, value))
        assert est.macs == estimate(heads, batch_size=2).macs


@pytest.mark.parametrize("make", [lambda: L.Attention(), lambda: L.Attention(use_scale=True),
                                  lambda: L.Attention(score_mode="concat"),
                                  lambda: L.Attention(score_mode="concat", use_scale=True),
                                  lambda: L.AdditiveAttention(), lambda: L.AdditiveAttention(use_scale=False)])
@pytest.mark.parametrize("with_key", [False, True])
def test_luong_and_bahdanau_attention_match_keras(make, with_key):
    """Keras Attention and AdditiveAttention on [query, value(, key)], from the config and live: the output
    of a real call (the values' width) and the scale weights; the scores are the query's width."""
    import numpy as np

    query, value, key = keras.Input((10, 32)), keras.Input((12, 20)), keras.Input((12, 32))
    inputs = [query, value, key] if with_key else [query, keras.Input((12, 32))]
    layer = make()
    model = keras.Model(inputs, layer(inputs))
    data = [np.zeros((2, *tuple(t.shape)[1:]), "float32") for t in inputs]
    output = model(data)
    for source in (model, model.get_config()):
        est = estimate(source, batch_size=2)
        (row,) = est.layers
        assert row.output_shape == tuple(output.shape) and est.params == model.count_params()
        assert sorted(w.shape for w in row.weights) == sorted(tuple(w.shape) for w in layer.weights)
    if type(layer) is L.Attention and layer.score_mode == "dot":  # query x keys, then probabilities x values
        assert row.macs_per_batch == 2 * 10 * 12 * (32 + tuple(inputs[1].shape)[-1])


@pytest.mark.parametrize("rank, shape, options", [
    (2, (5, 9, 8, 3), {}),
    (2, (5, 9, 8, 3), dict(strides=2, padding="same", return_sequences=True, return_state=True)),
    (1, (4, 11, 2), dict(dilation_rate=2, return_sequences=True)),
    (3, (3, 6, 5, 4, 2), dict(use_bias=False, return_state=True)),
    (2, (5, 3, 9, 8), dict(data_format="channels_first", return_sequences=True)),
])
def test_conv_lstm_matches_keras_and_counts_the_convolutions_torch_counts(rank, shape, options):
    """ConvLSTM1D/2D/3D from the config and live: every output's shape as Keras infers it (TensorFlow's
    CPU convolution refuses channels first without oneDNN, so no real call), each weight's shape, and 2 x
    MACs equal to torch's FlopCounterMode count of the convolutions each step runs (the input's with the
    layer's strides, padding and dilation, the state's with "same" padding)."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    layer = getattr(L, f"ConvLSTM{rank}D")(4, 3, **options)
    inputs = keras.Input(shape)
    model = keras.Model(inputs, layer(inputs))
    outputs = [(2, *o.shape[1:]) for o in model.outputs]
    first = options.get("data_format") == "channels_first"
    channels, spatial = (shape[1], shape[2:]) if first else (shape[-1], shape[1:-1])
    F = torch.nn.functional
    conv = getattr(F, f"conv{rank}d")
    out = outputs[0][1:] if not options.get("return_sequences") else outputs[0][2:]
    state = out[1:] if first else out[:-1]  # h's spatial sizes, which the recurrent convolution keeps
    stride = options.get("strides", 1)
    x = torch.zeros(2, channels, *spatial, device="meta")
    if options.get("padding") == "same":  # Keras' "same": the extra element of an odd total at the end
        pads = [max((-(-n // stride) - 1) * stride + 3 - n, 0) for n in spatial]
        x = F.pad(x, [p for total in reversed(pads) for p in (total // 2, total - total // 2)])
    counter = FlopCounterMode(display=False)
    with counter:
        for _ in range(shape[0]):
            conv(x, torch.zeros(16, channels, *(3,) * rank, device="meta"), stride=stride,
                 dilation=options.get("dilation_rate", 1))
            conv(torch.zeros(2, 4, *state, device="meta"), torch.zeros(16, 4, *(3,) * rank, device="meta"),
                 padding="same")
    for source in (model, model.get_config()):
        est = estimate(source, batch_size=2)
        (row,) = [r for r in est.layers if r.kind == "conv_lstm"]
        assert row.output_shapes == tuple(outputs)
        assert est.params == model.count_params()
        assert [w.shape for w in row.weights] == [tuple(w.shape) for w in layer.weights]
        assert 2 * row.macs_per_batch == counter.get_total_flops()


def test_a_recurrence_makes_its_state_gradients_for_its_weights_even_as_a_first_layer():
    inputs = keras.Input((10, 8))
    model = keras.Model(inputs, L.LSTM(16)(inputs))
    est = estimate(model, batch_size=4, optimizer="adam")
    recurrence = 4 * 10 * 16 * 4 * 16  # batch x steps x units x 4 gates x units, every step
    assert est.training.dgrad_flops >= 2 * recurrence  # the model's input needs no gradient; h does
    assert est.training.wgrad_flops == 2 * est.macs_per_batch  # each product once more, for its weight


@pytest.mark.parametrize("tie_weights", [True, False])
def test_reversible_embedding_looks_up_and_projects_onto_its_table_live_and_from_config(tie_weights):
    """keras.layers.ReversibleEmbedding (a causal LM's embedding and tied head): the lookup call reads its
    table; the reverse call projects each position onto its rows, through the table itself or, untied, a
    reverse kernel of its own. Both weights are the layer's whichever call is made; the second call is a
    layer tied to the first, so each weight counts once."""
    ids = keras.Input((7,), dtype="int32")
    embedding = keras.layers.ReversibleEmbedding(50, 12, tie_weights=tie_weights, name="tokens")
    hidden = keras.layers.Dense(12, name="mix")(embedding(ids))
    model = keras.Model(ids, embedding(hidden, reverse=True))
    for source in (model, model.get_config()):
        est = estimate(source, batch_size=3)
        assert est.params == model.count_params() == 50 * 12 * (1 if tie_weights else 2) + 12 * 12 + 12
        assert est.output_shape == tuple(model.compute_output_spec(keras.KerasTensor((3, 7), "int32")).shape)
        lookup, _, head = est.layers
        assert (lookup.kind, lookup.flops, head.kind, head.params) == ("reversible_embedding", 0,
                                                                       "reversible_embedding", 0)
        assert head.macs == 7 * 12 * 50 and head.flops == 2 * 7 * 12 * 50  # per sample
    trained = estimate(model, batch_size=3, optimizer="adam")
    assert trained.training.memory.gradients == trained.training.memory.weights  # each weight's gradient once


def test_a_soft_capped_reversible_embedding_is_refused_on_a_config_and_estimated_on_a_live_model():
    ids = keras.Input((7,), dtype="int32")
    embedding = keras.layers.ReversibleEmbedding(50, 12, logit_soft_cap=30.0)
    model = keras.Model(ids, embedding(embedding(ids), reverse=True))
    with pytest.raises(SpecError, match="logit_soft_cap=30.0 has no rule"):
        estimate(model.get_config())
    est = estimate(model)
    assert est.params == model.count_params() and {row.kind for row in est.layers} == {"foreign"}


def test_a_registered_keras_hub_activation_is_known_by_its_saved_name():
    gelu = {"module": "builtins", "class_name": "function", "config": "keras_hub>gelu_approximate",
            "registered_name": "function"}
    config = {"layers": [{"class_name": "Dense", "config": {"name": "d", "units": 3, "activation": gelu}}],
              "build_input_shape": [None, 4]}
    dense = estimate(config).layers[0]
    assert dense.flops == 2 * 4 * 3 + 3 + 5 * 3  # the products, the bias, gelu's 5 FLOPs per element
