"""paramcalc's own spec (Python API and JSON), the Estimate's data forms, and registration."""

from __future__ import annotations

import json

import pytest

import paramcalc
from paramcalc import (
    Activation,
    Dense,
    Dropout,
    Flatten,
    Identity,
    Permute,
    Reshape,
    Sequential,
    SpecError,
    Unflatten,
    estimate,
    symbol,
)

SEED_SPEC = {
    "name": "reshaped_flatten",
    "input_shape": ["n", 1],
    "layers": [
        {"kind": "dense", "units": 300, "activation": "relu"},
        {"kind": "flatten"},
        {"kind": "dense", "units": 300, "activation": "relu"},
        {"kind": "dense", "units": 100, "activation": "relu"},
        {"kind": "dense", "units": 1},
    ],
}


def test_dict_json_and_python_api_agree():
    api = estimate(paramcalc.seed_model("reshaped_flatten"))
    from_dict = estimate(SEED_SPEC)
    from_json = estimate(json.dumps(SEED_SPEC))
    assert api.params == from_dict.params == from_json.params == 90000 * symbol("n") + 31101
    assert [r.output_shape for r in api.layers] == [r.output_shape for r in from_json.layers]


def test_spec_errors_name_their_path():
    with pytest.raises(SpecError, match=r"unknown key 'layer'"):
        estimate({"input_shape": [3], "layer": []})
    with pytest.raises(SpecError, match=r"\$\.layers must be a list"):
        estimate({"input_shape": [3], "layers": {}})
    with pytest.raises(SpecError, match=r"\$\.layers\[1\] must be a layer object"):
        estimate({"input_shape": [3], "layers": [{"kind": "dense", "units": 2}, "dense"]})
    with pytest.raises(SpecError, match="not valid JSON"):
        estimate("{\"layers\": [")
    with pytest.raises(SpecError, match="NaN"):
        estimate('{"input_shape": [NaN], "layers": []}')


def test_json_units_must_be_integers():
    with pytest.raises(paramcalc.LayerConfigError, match=r"\$\.layers\[0\].*units=1000.0"):
        estimate({"input_shape": [3], "layers": [{"kind": "dense", "units": 1e3}]})


def test_every_kind_from_a_spec():
    spec = {"input_shape": [4, 6], "layers": [
        {"kind": "dense", "units": 6, "use_bias": False},
        {"kind": "activation", "function": "gelu"},
        {"kind": "dropout", "rate": 0.1},
        {"kind": "identity"},
        {"kind": "permute", "dims": [2, 1]},
        {"kind": "reshape", "target_shape": [-1, 3]},
        {"kind": "unflatten", "dim": 1, "sizes": [2, -1]},
        {"kind": "flatten"},
    ]}
    est = estimate(spec)
    assert [est.format_shape(r.output_shape) for r in est.layers] == [
        "(None, 4, 6)", "(None, 4, 6)", "(None, 4, 6)", "(None, 4, 6)", "(None, 6, 4)", "(None, 8, 3)",
        "(None, 2, 4, 3)", "(None, 24)"]
    assert {r.kind for r in est.layers} == {"dense", "activation", "dropout", "identity", "permute", "reshape",
                                            "unflatten", "flatten"}


def test_to_dict_is_plain_exact_data():
    est = estimate(SEED_SPEC)
    data = json.loads(est.to_json())
    assert data["totals"]["params"] == "90000*n + 31101"
    assert data["layers"][0]["output_shape"] == [None, "n", 300]
    assert data["flop_convention"].startswith("1 multiply-add = 2 FLOPs")
    concrete = json.loads(est.subs(n=20020).to_json())
    assert concrete["totals"]["params"] == 1801831101
    assert {d["code"] for d in concrete["diagnostics"]} == {"dense-per-position", "flatten-explosion"}
    batch = json.loads(estimate(SEED_SPEC, batch_size=128).subs(n=10).to_json())
    assert batch["layers"][0]["output_shape"] == [128, 10, 300] and batch["batch_size"] == 128


def test_summary_reads_like_keras():
    text = estimate(SEED_SPEC).subs(n=20020).summary()
    assert 'Model: "reshaped_flatten"' in text
    assert "dense_1 (Dense)" in text and "(None, 6006000)" in text and "1,801,800,300" in text
    assert "Total params: 1,801,831,101 (6.71 GiB in float32)" in text
    assert "Trainable params: 1,801,831,101" in text and "Non-trainable params: 0" in text
    assert "1 multiply-add = 2 FLOPs" in text
    assert "flatten-explosion" in text


def test_repr_is_short_and_data_does_not_format_itself():
    est = estimate(SEED_SPEC)
    assert repr(est) == "<Estimate 'reshaped_flatten': 5 layers, params=90000*n + 31101, output=(None, 1)>"
    assert len(repr(est)) < 120


def test_symbols_and_subs_of_batch():
    est = estimate(SEED_SPEC)
    assert est.symbols == {"n", "B"}
    concrete = est.subs(n=7, B=4)
    assert concrete.symbols == frozenset() and concrete.batch_size == 4
    assert concrete.flops_per_batch == 4 * concrete.flops


def test_subs_rejects_bad_values():
    with pytest.raises(paramcalc.DimensionError):
        estimate(SEED_SPEC).subs(n=-1)


def test_symbolic_layer_sizes():
    est = estimate(Sequential([Dense("h"), Dense(1)]), input_shape=(10,))
    assert str(est.params) == "12*h + 1"


def test_registering_a_custom_kind():
    @paramcalc.register_layer("square_features")
    class SquareFeatures(paramcalc.Layer):
        """Outer product of the last axis with itself, with no weights."""

        def infer(self, inputs, ctx):
            x = ctx.single(inputs)
            d = x.shape[-1]
            return ctx.result(x.with_shape(x.shape[:-1] + (d * d,)), flops=x.numel * d)

    est = estimate(Sequential([SquareFeatures(), Dense(1)]), input_shape=("n",))
    assert str(est.params) == "n**2 + 1"
    assert paramcalc.layer_kinds()["square_features"] is SquareFeatures
    assert estimate({"input_shape": [3], "layers": [{"kind": "square_features"}]}).output_shape[1:] == (9,)


def test_layer_objects_are_frozen_values():
    layer = Dense(3)
    with pytest.raises(Exception):
        layer.units = 4
    assert Dense(3) == Dense(3) and hash(Flatten()) == hash(Flatten())


def test_layer_argument_checks():
    for make, text in [
        (lambda: Dropout(1.5), "between 0 and 1"),
        (lambda: Activation("nope"), "unknown activation 'nope'"),
        (lambda: Permute((1, 3)), "must be consecutive and start from 1"),
        (lambda: Flatten(start_dim="1"), "integer axis"),
        (lambda: Unflatten(1, (-1, -1)), "only one dimension can be inferred"),
        (lambda: Reshape("12"), "tuple of sizes"),
    ]:
        with pytest.raises(paramcalc.LayerConfigError, match=text):
            make()


def test_identity_and_activation_costs():
    est = estimate(Sequential([Identity(), Activation("softmax"), Dropout(0.0)]), input_shape=(10,))
    assert [r.flops for r in est.layers] == [0, 50, 0]


def test_shape_errors_of_merges_name_every_input_shape():
    # the message is written only when a check fails: it must still name what was received
    cat = {"inputs": {"a": [3, 4], "b": [5, 6]},
           "layers": [{"kind": "concatenate", "axis": -1, "name": "cat", "inbound": ["a", "b"]}]}
    with pytest.raises(paramcalc.ShapeError, match=r"cat.*matching shapes.*\(None, 3, 4\), \(None, 5, 6\)"):
        estimate(cat)
    add = {"inputs": {"a": [3], "b": [4]}, "layers": [{"kind": "merge", "op": "add", "name": "sum", "inbound": ["a", "b"]}]}
    with pytest.raises(paramcalc.ShapeError, match=r"sum.*cannot broadcast shapes \(None, 3\), \(None, 4\).*3 and 4"):
        estimate(add)


def test_a_graph_node_takes_its_inbound_references_as_names_or_pairs_and_refuses_others_by_place():
    from paramcalc import Dense, Graph, GraphNode, SpecError

    def inbound(refs):
        graph = Graph(inputs=(("a", (3,)),), nodes=(GraphNode("d", Dense(2), refs),), outputs=(("d", 0),))
        return graph.nodes[0].inbound

    assert inbound(("a",)) == inbound(["a"]) == inbound((["a", 0],)) == inbound((("a", 0),)) == (("a", 0),)
    for bad in ((("a", -1),), (("a", True),), ((1, 0),), (("a", 0, 1),)):
        with pytest.raises(SpecError, match=r"layer 'd' inbound\[0\] must be a layer or input name"):
            inbound(bad)
