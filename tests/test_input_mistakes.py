"""Common mistakes in what a user hands in, each explained in the framework's own terms: the batch axis
given in input_shape (torchinfo's habit), and per-position Dense flagged only where it looks unintended."""

from __future__ import annotations

import pytest

import paramcalc
from paramcalc import Conv, Dense, Flatten, Sequential
from paramcalc.core.errors import ShapeError

torch = pytest.importorskip("torch")
nn = torch.nn


def _codes(est) -> list:
    return [d.code for d in est.diagnostics]


def test_a_batch_axis_that_breaks_a_torch_convolution_is_named_in_channels_first_terms():
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))
    with pytest.raises(ShapeError) as error:
        paramcalc.estimate(model, input_shape=(8, 3, 32, 32))
    text = str(error.value)
    assert "(batch, channels, height, width)" in text  # torch's order, not Keras'
    assert "looks like it includes the batch axis (8)" in text
    assert error.value.fix == "pass input_shape=(3, 32, 32), batch_size=8"
    with pytest.raises(ShapeError) as given:  # batch_size given already: only the shape to fix
        paramcalc.estimate(model, input_shape=(8, 3, 32, 32), batch_size=8)
    assert given.value.fix == "pass input_shape=(3, 32, 32)"
    assert paramcalc.estimate(model, input_shape=(3, 32, 32), batch_size=8).params == sum(
        p.numel() for p in model.parameters())


def test_a_shape_error_that_is_not_a_batch_axis_gets_no_such_hint():
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))
    with pytest.raises(ShapeError) as error:
        paramcalc.estimate(model, input_shape=(3, 32, 31))
    assert "batch axis" not in str(error.value)


def test_keras_rank_errors_keep_channels_last_terms():
    model = Sequential([Conv(8, 3), Flatten(), Dense(1)])
    with pytest.raises(ShapeError) as error:
        paramcalc.estimate(model, input_shape=(8, 32, 32, 3))
    assert "(batch, height, width, channels)" in str(error.value)
    assert error.value.fix == "pass input_shape=(32, 32, 3), batch_size=8"


def test_an_mlp_given_the_batch_axis_is_told_so():
    mlp = nn.Sequential(nn.Linear(20020, 300), nn.ReLU(), nn.Linear(300, 1))
    with_batch = paramcalc.estimate(mlp, input_shape=(128, 20020), batch_size=128)
    (found,) = [d for d in with_batch.diagnostics if d.code == "batch-axis-in-input-shape"]
    assert found.severity == "warning" and "equals batch_size=128" in found.message
    assert found.fix.startswith("if 128 is the batch size, pass input_shape=(20020,), batch_size=128")
    guessed = paramcalc.estimate(mlp, input_shape=(128, 20020))  # no batch size: a common one, kept to the end
    (hint,) = [d for d in guessed.diagnostics if d.code == "batch-axis-in-input-shape"]
    assert hint.severity == "info"
    # a sequence of 100 positions is no batch size, and a right input_shape gets nothing
    assert "batch-axis-in-input-shape" not in _codes(paramcalc.estimate(mlp, input_shape=(100, 20020)))
    assert _codes(paramcalc.estimate(mlp, input_shape=(20020,), batch_size=128)) == []


def test_per_position_dense_is_flagged_only_where_it_looks_unintended():
    encoder = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)
    assert "dense-per-position" not in _codes(paramcalc.estimate(encoder, input_shape=(16, 64)))
    tagger = Sequential([Dense(32), Dense(5)])  # per-position by design: a tag per token
    assert "dense-per-position" not in _codes(paramcalc.estimate(tagger, input_shape=(16, 64)))
    # ... unless the target is one value per sample
    assert "dense-per-position" in _codes(paramcalc.estimate(tagger, input_shape=(16, 64), target_shape=()))
    # a Flatten after it, or one feature per position: the seed case
    assert "dense-per-position" in _codes(paramcalc.estimate(Sequential([Dense(32), Flatten(), Dense(1)]),
                                                             input_shape=(16, 64)))
    for variant in ("reshaped", "reshaped_flatten"):
        est = paramcalc.estimate(paramcalc.seed_model(variant, 100))
        (found,) = [d for d in est.diagnostics if d.code == "dense-per-position"]
        assert found.severity == "warning"
