"""KerasHub backbones and task models, built from small explicit arguments (tests/keras_hub_zoo.py) and
read from the live model: total, trainable and non-trainable parameters and every output shape exactly as
Keras has them. Layers of classes paramcalc has no rule for (KerasHub's Transformer blocks, embeddings)
take Keras' own shape inference and their built weights; the estimate names each such class."""

from __future__ import annotations

import functools
import math

import pytest

import paramcalc
from paramcalc.core.layer import ALL_TIED

from . import keras_hub_zoo

keras_hub = keras_hub_zoo.load()
pytestmark = pytest.mark.skipif(keras_hub is None, reason="keras-hub is not installed")
BACKBONES = sorted(keras_hub_zoo.backbones())
TASKS = sorted(keras_hub_zoo.tasks())


@functools.lru_cache(maxsize=None)
def _built(name: str):
    return keras_hub_zoo.build(keras_hub, name)


def _keras_outputs(model, shapes: dict, batch: int) -> list:
    """The output shapes Keras infers for inputs of these shapes."""
    import keras

    struct = keras.tree.map_structure(
        lambda t: keras.KerasTensor((batch,) + shapes[t._keras_history.operation.name], dtype=t.dtype), model.input)
    return [tuple(t.shape) for t in keras.tree.flatten(model.compute_output_spec(struct))]


def test_the_zoo_spans_the_families():
    families = {family for family, _, _ in keras_hub_zoo.backbones().values()}
    assert len(BACKBONES) >= 15 and families == {"text encoder", "decoder", "encoder-decoder", "vision"}


@pytest.mark.parametrize("name", BACKBONES + TASKS)
def test_keras_hub_model_is_exact(name):
    model = _built(name)
    shapes = keras_hub_zoo.input_shapes(model)
    est = paramcalc.estimate(model, input_shape=shapes, batch_size=2)
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    assert (est.params, est.trainable_params, est.non_trainable_params) == (
        model.count_params(), trainable, model.count_params() - trainable)
    assert [tuple(s) for s in est.output_shapes] == _keras_outputs(model, shapes, 2)
    for cls in {row.layer.type_name for row in est.layers if row.kind == "foreign"}:
        assert any(note.startswith(f"{cls} (") and "shape from Keras, cost estimated as" in note for note in est.notes)


@pytest.mark.parametrize("name", ["bert", "llama", "t5"])
def test_a_free_sequence_length_stays_a_symbol(name):
    model = _built(name)
    shapes = {input_name: ("s",) if len(shape) == 1 else shape
              for input_name, shape in keras_hub_zoo.input_shapes(model).items()}
    est = paramcalc.estimate(model, input_shape=shapes, batch_size=2)
    concrete = paramcalc.estimate(model, input_shape=keras_hub_zoo.input_shapes(model), batch_size=2)
    assert any("s" in str(d) for shape in est.output_shapes for d in shape)
    at_seq = est.subs(s=keras_hub_zoo.SEQ)
    assert [tuple(s) for s in at_seq.output_shapes] == [tuple(s) for s in concrete.output_shapes]
    assert (at_seq.params, at_seq.flops) == (concrete.params, concrete.flops)


def test_the_tied_embedding_of_a_causal_lm_counts_once_and_its_reverse_call_is_a_product():
    est = paramcalc.estimate(_built("gpt2_causal_lm"), input_shape=keras_hub_zoo.input_shapes(_built("gpt2_causal_lm")),
                             batch_size=2)
    calls = [row for row in est.layers if row.name.endswith(("token_embedding", "token_embedding@1"))]
    lookup, reverse = calls
    assert lookup.params == 100 * 16 and lookup.flops == 0
    assert (lookup.kind, reverse.kind) == ("reversible_embedding",) * 2
    assert reverse.layer.tied is ALL_TIED and reverse.params == 0  # another layer over the same table
    assert reverse.macs == keras_hub_zoo.SEQ * 16 * 100  # per sample: each position projected onto 100 rows


def test_position_embedding_adds_its_table_shaped_as_the_input_and_refuses_longer_inputs():
    import keras

    tokens = keras.Input((None, 6))
    model = keras.Model(tokens, keras_hub.layers.PositionEmbedding(sequence_length=10)(tokens))
    est = paramcalc.estimate(model, input_shape=("s", 6), batch_size=2)
    row = est.layers[0]
    assert (row.kind, row.params, row.flops, row.output_shape) == ("position_embedding", 60, 0,
                                                                   (2, paramcalc.symbol("s"), 6))
    with pytest.raises(paramcalc.ShapeError, match="holds 10 positions, the input has 11"):
        paramcalc.estimate(model, input_shape=(11, 6))


def test_a_users_class_named_as_a_keras_hub_layer_is_not_read_by_its_rule():
    import keras

    class PositionEmbedding(keras.layers.Layer):  # a user's own, with another meaning
        def build(self, shape):
            self.table = self.add_weight(shape=(shape[-1], shape[-1]), name="table")

        def call(self, x):
            return keras.ops.matmul(x, self.table)

    tokens = keras.Input((5, 6))
    est = paramcalc.estimate(keras.Model(tokens, PositionEmbedding()(tokens)))
    assert [row.kind for row in est.layers] == ["foreign"] and est.params == 36


# read as the calls their blocks make, every call by a rule: exact in cost too
CALLS_READ = ["albert", "bert", "distil_bert", "electra", "roberta", "xlm_roberta", "gpt2", "opt", "bart",
              "mistral", "phi3", "qwen2", "qwen3", "llama", "llama3", "whisper", "bert_text_classifier",
              "gpt2_causal_lm", "llama_causal_lm"]


@pytest.mark.parametrize("name", CALLS_READ)
def test_keras_hub_models_made_of_generic_blocks_have_no_estimated_row(name):
    model = _built(name)
    est = paramcalc.estimate(model, input_shape=keras_hub_zoo.input_shapes(model), batch_size=2)
    assert not [row.name for row in est.layers if row.kind == "foreign"]
    assert est.params == model.count_params()


def test_a_transformer_encoder_block_is_its_attention_norms_and_feed_forward():
    est = paramcalc.estimate(_built("bert"), input_shape=keras_hub_zoo.input_shapes(_built("bert")), batch_size=2)
    block = [(row.name.split("/", 1)[1], row.kind) for row in est.layers if row.name.startswith("transformer_layer_0/")]
    assert block == [("self_attention_layer", "attention"), ("self_attention_dropout", "dropout"),
                     ("add", "merge"), ("self_attention_layer_norm", "layer_norm"),
                     ("feedforward_intermediate_dense", "dense"), ("feedforward_output_dense", "dense"),
                     ("feedforward_dropout", "dropout"), ("add_1", "merge"), ("feedforward_layer_norm", "layer_norm")]


@pytest.mark.parametrize("name", ["llama", "mistral", "qwen2", "phi3"])
def test_the_decoder_families_rms_norms_are_rms_norms(name):
    model = _built(name)
    est = paramcalc.estimate(model, input_shape=keras_hub_zoo.input_shapes(model), batch_size=2)
    final = next(row for row in est.layers if row.name.endswith("sequence_output_layernorm"))
    assert (final.kind, final.params, final.flops) == ("rms_norm", 16, 4 * keras_hub_zoo.SEQ * 16)


@pytest.mark.parametrize("name", ["gpt2", "mistral", "llama", "bart"])
def test_a_backbones_alike_blocks_copied_give_the_rows_tracing_each_gives(name, monkeypatch):
    from paramcalc.frontends import keras_alike

    model = _built(name)
    shapes = keras_hub_zoo.input_shapes(model)
    copied = paramcalc.estimate(model, input_shape=shapes, batch_size=2)
    monkeypatch.setattr(keras_alike, "COPY", False)
    traced = paramcalc.estimate(model, input_shape=shapes, batch_size=2)
    def table(est) -> list:
        return [(r.name, r.kind, r.output_shape, r.params, r.flops, r.shared_with, r.inbound) for r in est.layers]

    assert table(copied) == table(traced)
    monkeypatch.setattr(keras_alike, "COPY", True)  # again, after a trace of every block: read alike
    assert table(paramcalc.estimate(model, input_shape=shapes, batch_size=2)) == table(copied)
    assert not any(row.kind == "foreign" for row in copied.layers)


def test_rotary_embeddings_keep_the_shape_and_count_the_rotation():
    model = _built("llama")
    est = paramcalc.estimate(model, input_shape=keras_hub_zoo.input_shapes(model), batch_size=2)
    rotary = [row for row in est.layers if row.kind == "rotary_embedding"]
    assert len(rotary) == 4  # the queries and the keys of each of the two blocks
    for row in rotary:
        (batch, length, heads, width), = row.input_shapes
        assert row.output_shape == row.input_shapes[0] and row.params == 0
        elements = batch * length * heads * width
        # x * cos + rotate_half(x) * sin, the negation of half; the angles, sines and cosines once per batch
        assert row.flops_per_batch == 3 * elements + elements // 2 + 3 * length * (width // 2)
