"""The dimension, reshape and graph rows of ../shared/reference/bad-inputs.md that the core handles."""

import json

import pytest

import paramcalc
from paramcalc import (
    Activation,
    Dense,
    DimensionError,
    LayerConfigError,
    ParamcalcError,
    Reshape,
    Sequential,
    ShapeError,
    SpecError,
    UnknownLayerError,
    estimate,
    symbol,
)


@pytest.mark.parametrize("bad,shown", [
    (-2, "-2"), (3.0, "3.0"), ("3", "'3'"), (True, "True"), (float("nan"), "nan"), (1e400, "inf"),
    (10**5000, "an integer of 16610 bits"),
], ids=["negative", "float", "numeric-string", "bool", "nan", "inf", "5000-digits"])
def test_bad_dimension_in_input_shape(bad, shown):
    with pytest.raises(DimensionError) as info:
        estimate(Sequential([Dense(3)]), input_shape=(4, bad))
    message = str(info.value)
    assert "dimension must be a non-negative integer" in message
    assert "input_shape[1]" in message and shown in message
    assert isinstance(info.value, ParamcalcError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", [-1, 2.5, "3", True, float("nan")])
def test_bad_layer_size_names_the_argument(bad):
    with pytest.raises(LayerConfigError) as info:
        Dense(bad, name="head")
    assert "units" in str(info.value) and repr(bad) in str(info.value) and "'head'" in str(info.value)


def test_numpy_dims_are_ints():
    np = pytest.importorskip("numpy")
    est = estimate(Sequential([Dense(np.int64(300))]), input_shape=(np.int64(20020),))
    assert est.params == 300 * 20021 and type(est.params) is int


def test_wide_dense_exact_count_and_bytes():
    est = estimate(Sequential([Dense(100000)]), input_shape=(30000,))
    assert est.params == 3_000_100_000
    assert est.param_bytes == 12_000_400_000


def test_counts_past_2_53_stay_exact_in_json():
    v = 2**27 + 1
    est = estimate(Sequential([Dense(v, use_bias=False)]), input_shape=(v,))
    assert est.params == 18_014_398_777_917_441
    assert json.loads(est.to_json())["totals"]["params"] == 18_014_398_777_917_441
    assert "18014398777917441" in est.to_json()


def test_huge_activation_is_exact():
    est = estimate(Sequential([Activation("relu")]), input_shape=(100000,) * 4)
    assert est.layers[0].flops == 10**20  # one FLOP per element of 10**20 elements; numpy would wrap


def test_units_zero_is_zero_params_with_warning():
    est = estimate(Sequential([Dense(0, name="empty"), Dense(4)]), input_shape=(8,))
    assert est.row("empty").params == 0
    assert est.row("dense").params == 4  # bias only: a 0-feature input
    warnings = [d for d in est.diagnostics if d.code == "empty-tensor"]
    assert warnings and warnings[0].layer == "empty"


def test_batch_size_zero_is_zero_with_warning():
    est = estimate(Sequential([Dense(4)]), input_shape=(8,), batch_size=0)
    assert est.flops_per_batch == 0 and est.params == 36
    assert any(d.code == "empty-tensor" and "batch_size is 0" in d.message for d in est.diagnostics)


def test_unknown_batch_gives_expressions_in_B():
    est = estimate(Sequential([Dense(128)]), input_shape=(128,))
    assert est.params == 128 * 129
    assert str(est.flops_per_batch) == f"{est.flops}*B"
    assert est.format_shape(est.output_shape) == "(None, 128)"
    sized = est.subs(B=32)
    assert sized.flops_per_batch == 32 * est.flops and sized.output_shape == (32, 128)
    named = estimate(Sequential([Dense(128)]), input_shape=(128,), batch_size="batch")
    assert named.flops_per_batch == est.flops * symbol("batch")
    assert named.format_shape(named.output_shape) == "(batch, 128)"


def test_none_in_input_shape_becomes_a_symbol():
    est = estimate(Sequential([Dense(8)]), input_shape=(None, 16))
    assert est.params == 8 * 17
    assert est.format_shape(est.output_shape) == "(None, d1, 8)"


@pytest.mark.parametrize("target,message", [
    ((-1, -1), "at most one unknown dimension"),
])
def test_reshape_two_unknowns(target, message):
    with pytest.raises(LayerConfigError, match=message):
        Reshape(target)


@pytest.mark.parametrize("target,message", [
    ((-1, 7), "cannot be divided by the specified dimensions"),
    ((5, 5), "total size of the tensor must be unchanged"),
])
def test_reshape_wrong_sizes_name_layer_and_numbers(target, message):
    with pytest.raises(ShapeError) as info:
        estimate(Sequential([Reshape(target, name="rs")]), input_shape=(12,))
    text = str(info.value)
    assert message in text and "'rs'" in text and "(12,)" in text
    assert str(target[-1]) in text


def test_reshape_infers_minus_one():
    est = estimate(Sequential([Reshape((-1, 4))]), input_shape=(12,))
    assert est.format_shape(est.output_shape) == "(None, 3, 4)"


def test_linear_fed_wrong_features_names_layer_and_both_numbers():
    model = Sequential([Dense(300, in_features=20020, name="fc1", type_name="Linear")])
    with pytest.raises(ShapeError) as info:
        estimate(model, input_shape=(6006000,))
    text = str(info.value)
    assert "'fc1'" in text and "20020" in text and "6006000" in text


def test_undecidable_comparison_is_an_assumption():
    model = Sequential([Dense(300, in_features=20020, name="fc1")])
    est = estimate(model, input_shape=("n",))
    assert [str(a) for a in est.assumptions] == ["n == 20020"]
    assert est.assumptions[0].layer == "fc1"
    assert est.subs(n=20020).assumptions == ()
    with pytest.raises(ShapeError, match="fc1"):
        est.subs(n=5)


def test_symbolic_reshape_records_divisibility():
    est = estimate(Sequential([Reshape((-1, 7))]), input_shape=("n",))
    assert [str(a) for a in est.assumptions] == ["n is divisible by 7"]
    assert est.subs(n=21).output_shape[1:] == (3, 7)
    with pytest.raises(ShapeError):
        est.subs(n=20)


def test_ten_thousand_layer_chain():
    layers = [Dense(4) for _ in range(10_000)]
    est = estimate(Sequential(layers), input_shape=(4,))
    assert est.params == 10_000 * 20 and len(est.layers) == 10_000


def test_shared_layer_counted_once_but_flops_twice():
    shared = Dense(16, name="shared")
    est = estimate(Sequential([shared, shared]), input_shape=(16,))
    assert est.params == 16 * 17
    assert est.layers[1].shared_with == "shared" and est.layers[1].params == 0
    assert est.flops == 2 * est.layers[0].flops


def test_duplicate_layer_names():
    with pytest.raises(SpecError) as info:
        estimate(Sequential([Dense(3, name="a"), Dense(3, name="a")]), input_shape=(3,))
    assert "'a'" in str(info.value) and "0" in str(info.value) and "1" in str(info.value)


def test_duplicate_json_keys_name_key_and_path():
    text = '{"input_shape": [3], "layers": [{"kind": "dense", "units": 3, "units": 4}]}'
    with pytest.raises(SpecError) as info:
        estimate(text)
    assert "'units'" in str(info.value) and "$.layers[0]" in str(info.value)


def test_deeply_nested_json_is_refused_quickly():
    text = "[" * 100_000 + "]" * 100_000
    with pytest.raises(SpecError, match=r"nesting too deep \(limit 64\)"):
        estimate(text)


def test_unknown_kind_names_it_and_the_registration_call():
    with pytest.raises(UnknownLayerError) as info:
        estimate({"input_shape": [3], "layers": [{"kind": "conv9d"}]})
    assert "conv9d" in str(info.value) and "register_layer" in str(info.value)


def test_non_model_object():
    with pytest.raises(SpecError, match="cannot estimate an object of type"):
        estimate(object(), input_shape=(3,))


def test_missing_input_shape():
    with pytest.raises(SpecError, match="input_shape"):
        estimate(Sequential([Dense(3)]))


def test_batch_symbol_reserved():
    with pytest.raises(SpecError, match="batch axis"):
        estimate(Sequential([Dense(3)]), input_shape=("B", 3))


def test_errors_share_one_root():
    for cls in (DimensionError, LayerConfigError, ShapeError, SpecError, UnknownLayerError):
        assert issubclass(cls, paramcalc.ParamcalcError)


def _graph_spec(layers, outputs=None):
    return {"inputs": {"x": [4]}, "layers": layers, **({"outputs": outputs} if outputs else {})}


def test_graph_spec_runs():
    est = estimate(_graph_spec([
        {"kind": "dense", "units": 3, "name": "a", "inbound": ["x"]},
        {"kind": "dense", "units": 3, "name": "b", "inbound": ["x"]},
        {"kind": "merge", "op": "add", "name": "sum", "inbound": ["a", "b"]},
    ]))
    assert est.params == 30 and est.output_shape[1:] == (3,)


def test_cycle_names_the_loop():
    with pytest.raises(SpecError, match=r"cycle: a -> b -> a"):
        estimate(_graph_spec([
            {"kind": "dense", "units": 4, "name": "a", "inbound": ["b"]},
            {"kind": "dense", "units": 4, "name": "b", "inbound": ["a"]},
        ], outputs=["b"]))


def test_self_loop():
    with pytest.raises(SpecError, match=r"cycle: a -> a"):
        estimate(_graph_spec([{"kind": "dense", "units": 4, "name": "a", "inbound": ["a"]}]))


def test_missing_inbound_names_both():
    with pytest.raises(SpecError) as info:
        estimate(_graph_spec([{"kind": "dense", "units": 4, "name": "a", "inbound": ["nope"]}]))
    assert "'a'" in str(info.value) and "'nope'" in str(info.value)


def test_duplicate_node_names_in_a_graph():
    with pytest.raises(SpecError, match="duplicate layer name 'a'"):
        estimate(_graph_spec([{"kind": "dense", "units": 4, "name": "a", "inbound": ["x"]},
                              {"kind": "dense", "units": 4, "name": "a", "inbound": ["x"]}]))


def test_models_nested_200_deep_are_refused():
    config = {"class_name": "Dense", "config": {"name": "d", "units": 2}}
    for depth in range(200):
        config = {"class_name": "Sequential", "config": {"name": f"m{depth}", "layers": [config]}}
    doc = {"name": "outer", "layers": [config], "build_input_shape": [None, 3]}
    with pytest.raises(SpecError, match=r"nesting too deep \(limit 64\)"):
        estimate(doc)


def test_conv_window_larger_than_input():
    with pytest.raises(ShapeError, match="output size would be non-positive"):
        estimate(Sequential([paramcalc.Conv(4, 5)]), input_shape=(3, 3, 1))
    with pytest.raises(ShapeError, match="output size would be non-positive"):
        estimate(Sequential([paramcalc.Pool("max", 4)]), input_shape=(3, 3, 1))
