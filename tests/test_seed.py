"""The seed case's figures, exactly (../shared/reference/seed-case.md)."""

import pytest

import paramcalc
from paramcalc import estimate, seed_model, symbol

n = symbol("n")

# (variant, features) -> (total params, output of the first Dense, final output)
TABLE = {
    ("flat", 100): (150_801, (None, 300), (None, 1)),
    ("reshaped_flatten", 100): (9_031_101, (None, 100, 300), (None, 1)),
    ("reshaped", 100): (121_101, (None, 100, 300), (None, 100, 1)),
    ("flat", 20020): (6_126_801, (None, 300), (None, 1)),
    ("reshaped_flatten", 20020): (1_801_831_101, (None, 20020, 300), (None, 1)),
    ("reshaped", 20020): (121_101, (None, 20020, 300), (None, 20020, 1)),
}


def _shape(est, shape):
    return tuple(None if est.format_dim(d) == "None" else d for d in shape)


@pytest.mark.parametrize("variant,features", sorted(TABLE))
def test_seed_table(variant, features):
    params, first_out, final_out = TABLE[variant, features]
    est = estimate(seed_model(variant, features))
    assert est.params == params and type(est.params) is int
    assert est.trainable_params == params and est.non_trainable_params == 0
    assert _shape(est, est.layers[0].output_shape) == first_out
    assert _shape(est, est.output_shape) == final_out


def test_flattened_features_and_big_dense():
    est = estimate(seed_model("reshaped_flatten", 100))
    assert _shape(est, est.row("flatten").output_shape) == (None, 30000)
    assert est.row("dense_1").params == 300 * (30000 + 1) == 9_000_300
    assert est.row("dense").params == 600


@pytest.mark.parametrize("variant,formula", [
    ("flat", 300 * n + 120801),
    ("reshaped_flatten", 90000 * n + 31101),
    ("reshaped", 121101),
])
def test_seed_formulas_in_n(variant, formula):
    est = estimate(seed_model(variant))  # features default to the symbol n
    assert est.params == formula
    assert est.subs(n=20020).params == TABLE[variant, 20020][0]
    assert est.subs(n=100).params == TABLE[variant, 100][0]


def test_formula_prints_as_in_the_issue():
    assert str(estimate(seed_model("reshaped_flatten"), input_shape=("n", 1)).params) == "90000*n + 31101"


def test_diagnostics_answer_the_seed_question():
    flat = estimate(seed_model("flat", 20020), target_shape=())
    reshaped_flatten = estimate(seed_model("reshaped_flatten", 20020), target_shape=())
    reshaped = estimate(seed_model("reshaped", 20020), target_shape=())
    assert flat.diagnostics == ()  # Keras squeezes (None, 1) against (None,): nothing to report

    codes = {d.code: d for d in reshaped_flatten.diagnostics}
    assert set(codes) == {"dense-per-position", "flatten-explosion"}
    per_position = codes["dense-per-position"]
    assert per_position.layer == "dense" and per_position.severity == "warning"
    assert "last axis" in per_position.message and "20,020 positions" in per_position.message
    assert "(1, 300)" in per_position.message
    explosion = codes["flatten-explosion"]
    assert explosion.layer == "flatten"
    assert "6,006,000 features" in explosion.message and "1,801,800,300" in explosion.message
    assert "19,953x" in explosion.message  # 1,801,800,300 // (300 * 301)

    codes = {d.code: d for d in reshaped.diagnostics}
    assert set(codes) == {"dense-per-position", "loss-broadcast"}
    assert "(None, 20020, 1)" in codes["loss-broadcast"].message
    assert "3 later Dense" in codes["dense-per-position"].message


def test_symbolic_diagnostics_still_fire():
    est = estimate(seed_model("reshaped_flatten"), target_shape=())
    assert {d.code for d in est.diagnostics} == {"dense-per-position", "flatten-explosion"}


def test_flops_per_sample_are_exact():
    flat = estimate(seed_model("flat", 20020))
    # 2 FLOPs per multiply-add + 1 per bias add + 1 per relu on the three hidden layers
    expected = (2 * 20020 * 300 + 300 + 300) + (2 * 300 * 300 + 300 + 300) + (2 * 300 * 100 + 100 + 100) + (2 * 100 + 1)
    assert flat.flops == expected
    assert flat.macs == 20020 * 300 + 300 * 300 + 300 * 100 + 100
    batch = estimate(seed_model("flat", 20020), batch_size=128)
    assert batch.flops_per_batch == 128 * expected and batch.flops == expected


def test_seed_model_rejects_unknown_variant():
    with pytest.raises(ValueError, match="unknown seed variant"):
        paramcalc.seed_model("nope")
