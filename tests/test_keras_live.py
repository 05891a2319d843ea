"""Live Keras models read from their functional graph (frontends/keras_live.py): models built inside a
subclass, layer classes paramcalc has no rule for (Keras infers their shapes, their built weights are
counted, their cost is estimated and said), Keras operations on tensors, shared layers."""

from __future__ import annotations

import math

import pytest

import paramcalc

keras = pytest.importorskip("keras")


class Project(keras.layers.Layer):
    """A layer class paramcalc has no rule for: a (features, 4) kernel and a frozen (4,) offset."""

    def build(self, shape):
        self.kernel = self.add_weight(shape=(shape[-1], 4), name="kernel")
        self.offset = self.add_weight(shape=(4,), name="offset", trainable=False)

    def call(self, x):
        if x.shape[-1] != self.kernel.shape[0]:
            raise ValueError(f"Project expects {self.kernel.shape[0]} features, received {x.shape[-1]}")
        return keras.ops.matmul(x, self.kernel) + self.offset


class Tagger(keras.Model):
    """A functional model built inside a subclass's __init__ (as KerasHub builds every model)."""

    def __init__(self):
        tokens = keras.Input((None, 6), name="tokens")
        shared = keras.layers.Dense(6, name="shared")
        h = shared(shared(tokens))  # one layer called twice
        h = Project(name="project")(h)
        super().__init__(tokens, keras.layers.Dense(2, name="head")(h[:, 0]), name="tagger")

    def get_config(self):
        return {"name": self.name}  # what KerasHub's models serialize: constructor arguments


def test_a_functional_model_built_in_a_subclass_is_read_from_its_graph():
    model = Tagger()
    est = paramcalc.estimate(model, input_shape=("s", 6), batch_size=3)
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    assert (est.params, est.trainable_params, est.non_trainable_params) == (
        model.count_params(), trainable, model.count_params() - trainable) == (42 + 24 + 4 + 10, 42 + 24 + 10, 4)
    assert est.output_shape == (3, 2)
    rows = {row.name: row for row in est.layers}
    assert rows["shared@1"].shared_with == "shared" and rows["shared@1"].params == 0
    project = rows["project"]
    assert project.kind == "foreign" and project.type == "Project (estimated)"
    assert project.output_shape == (3, paramcalc.symbol("s"), 4)
    # the estimate: 2 FLOPs per kernel weight per position, 1 per offset element per position
    assert est.subs(s=5).layers[[r.name for r in est.layers].index("project")].flops == 2 * 5 * 24 + 5 * 4
    get_item = next(row for row in est.layers if row.type == "GetItem")  # h[:, 0]; Keras numbers its name
    assert get_item.kind == "index" and get_item.output_shape == (3, 4) and get_item.flops == 0
    notes = [n for n in est.notes if "shape from Keras, cost estimated as" in n]
    assert len(notes) == 1 and notes[0].startswith("Project (1 call): no paramcalc rule for this class")
    # its call() is not read as the calls it makes: it reads its kernel with keras.ops itself
    assert "its weight project/kernel is read by its own code, not by a layer paramcalc has a rule for" in notes[0]


def test_training_memory_and_time_work_on_estimated_rows():
    est = paramcalc.estimate(Tagger(), input_shape=(5, 6), batch_size=3, device="cpu")
    assert est.training.memory.activations > 0 and est.training.step_seconds > 0
    assert dict((name, f) for name, f, _, _ in est.training.layer_flops)["project"] == 2 * 3 * 5 * 24 + 3 * 5 * 4


def test_a_class_without_a_rule_in_a_config_keeps_the_clear_error_and_the_live_model_is_read():
    model = keras.Sequential([keras.Input((5, 6)), Project(name="project"), keras.layers.Flatten()])
    with pytest.raises(paramcalc.UnknownLayerError, match="unsupported layer class '.*Project'"):
        paramcalc.estimate(model.get_config())
    est = paramcalc.estimate(model)
    assert est.params == model.count_params() and est.output_shape[1:] == (20,)


def test_a_configuration_a_rule_refuses_falls_back_to_keras_on_a_live_model():
    x = keras.Input((4, 4, 8))
    y = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, attention_axes=(1, 2))(x, x)
    model = keras.Model(x, y)
    with pytest.raises(paramcalc.ParamcalcError, match="attention_axes"):
        paramcalc.estimate(model.get_config())
    est = paramcalc.estimate(model)
    assert est.params == model.count_params() and est.output_shape[1:] == (4, 4, 8)
    assert any(n.startswith("MultiHeadAttention (1 call): paramcalc's rule refused it") for n in est.notes)


def test_a_keras_operation_without_a_rule_is_read_on_a_live_model():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.ops.sin(inputs)))
    est = paramcalc.estimate(model, batch_size=2)
    sin = est.layers[0]
    assert (sin.type, sin.output_shape, sin.flops) == ("Sin (estimated)", (2, 8), 0)
    assert any("one pass over its inputs and outputs" in n for n in est.notes)


def test_what_keras_cannot_infer_is_an_error_naming_the_layer():
    with pytest.raises(paramcalc.ShapeError, match=r"(?s)Keras could not infer what Project makes .*"
                       r"Project expects 6 features, received 7") as err:
        paramcalc.estimate(keras.Sequential([keras.Input((5, 6)), Project(name="project")]), input_shape=(5, 7))
    assert err.value.layer == "project"


def test_a_subclassed_model_without_a_graph_is_refused_with_the_fix():
    class Free(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(paramcalc.SpecError, match="no functional graph") as err:
        paramcalc.estimate(Free(), input_shape=(4,))
    assert "keras.Input" in err.value.fix


def test_a_class_named_as_a_known_one_whose_get_config_fails_is_estimated_with_the_reason():
    class RMSNormalization(keras.layers.Layer):  # a library's own class, named as Keras' (KerasHub's Gemma)
        def __init__(self, scale_init=lambda shape, dtype=None: keras.ops.ones(shape), **kwargs):
            super().__init__(**kwargs)
            self.scale_init = scale_init

        def build(self, shape):
            self.scale = self.add_weight(shape=(shape[-1],), initializer=self.scale_init, name="scale")

        def call(self, x):
            return x * (1 + self.scale)

        def get_config(self):
            raise NotImplementedError

    inputs = keras.Input((5, 6))
    est = paramcalc.estimate(keras.Model(inputs, RMSNormalization()(inputs)), batch_size=2)
    assert [row.kind for row in est.layers] == ["foreign"] and est.params == 6
    assert any("its get_config() fails (NotImplementedError)" in note for note in est.notes)
