"""Every keras.applications model (weights=None), read from its config and from the live model: total,
trainable and non-trainable parameters and output shapes exactly as Keras counts them. Includes the
applications' own layer classes (ConvNeXt's LayerScale, InceptionResNetV2's CustomScaleLayer) and Keras
operations applied to tensors in a functional model (MobileNetV3's ``x + 3.0``)."""

from __future__ import annotations

import inspect
import math

import pytest

import paramcalc

keras = pytest.importorskip("keras")

APPLICATIONS = sorted(name for name, f in inspect.getmembers(keras.applications)
                      if inspect.isfunction(f) and name[0].isupper())


def test_the_applications_are_all_found():
    assert len(APPLICATIONS) >= 38 and {"ResNet50", "ConvNeXtTiny", "MobileNetV3Small"} <= set(APPLICATIONS)


@pytest.mark.parametrize("name", APPLICATIONS)
def test_keras_application_is_exact(name):
    model = getattr(keras.applications, name)(weights=None)
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    for source in (model.get_config(), model):
        est = paramcalc.estimate(source)
        assert (est.params, est.trainable_params, est.non_trainable_params) == (
            model.count_params(), trainable, model.count_params() - trainable)
        assert est.output_shape[1:] == tuple(model.output_shape[1:])
    keras.backend.clear_session()


def test_keras_operations_on_tensors_in_a_functional_model():
    inputs = keras.Input((6, 8))
    x = keras.layers.Dense(8)(inputs)
    y = (x + 3.0) * (1.0 / 6.0)  # hard sigmoid, as MobileNetV3 writes it
    z = keras.ops.multiply(y, x) - keras.ops.divide(x, 2.0)
    model = keras.Model(inputs, keras.layers.Dense(2)(z))
    for source in (model.get_config(), model):
        est = paramcalc.estimate(source, batch_size=4)
        assert est.params == model.count_params() and est.output_shape == (4, 6, 2)
    kinds = [row.kind for row in est.layers]
    assert kinds.count("scalar_op") == 3 and kinds.count("merge") == 2


def test_a_keras_operation_paramcalc_does_not_model_is_named():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.ops.sin(inputs))
    with pytest.raises(paramcalc.ParamcalcError, match=r"keras\.src\.ops\.numpy\.Sin"):
        paramcalc.estimate(model.get_config())
