"""A live layer of a class paramcalc has no rule for, whose call() is made of layer calls and Keras operations
paramcalc has rules for, is read as those calls (frontends/keras_trace.py): exactly what paramcalc says
of the same layers called in a functional model, named under the layer. Where it is not, the layer is
estimated whole and its note says why."""

from __future__ import annotations

import pytest

import paramcalc

keras = pytest.importorskip("keras")
layers = keras.layers


class Block(layers.Layer):
    """The Transformer block of Keras' text classification example."""

    def __init__(self, embed_dim=16, num_heads=2, ff_dim=24, **kwargs):
        super().__init__(**kwargs)
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim, name="att")
        self.ffn = keras.Sequential([layers.Dense(ff_dim, activation="relu", name="up"),
                                     layers.Dense(embed_dim, name="down")], name="ffn")
        self.norm1 = layers.LayerNormalization(epsilon=1e-6, name="norm1")
        self.norm2 = layers.LayerNormalization(epsilon=1e-6, name="norm2")
        self.drop1 = layers.Dropout(0.1, name="drop1")
        self.drop2 = layers.Dropout(0.1, name="drop2")

    def call(self, inputs):
        out1 = self.norm1(inputs + self.drop1(self.att(inputs, inputs)))
        return self.norm2(out1 + self.drop2(self.ffn(out1)))


def _classifier(block) -> keras.Model:
    inputs = keras.Input((10, 16), name="tokens")
    x = layers.GlobalAveragePooling1D(name="pool")(block(inputs))
    return keras.Model(inputs, layers.Dense(2, name="head")(x))


def _written_out() -> keras.Model:
    """The classifier with the block's layers called in the functional model itself."""
    inputs = keras.Input((10, 16), name="tokens")
    att = layers.MultiHeadAttention(num_heads=2, key_dim=16)(inputs, inputs)
    out1 = layers.LayerNormalization(epsilon=1e-6)(inputs + layers.Dropout(0.1)(att))
    ffn = keras.Sequential([layers.Dense(24, activation="relu"), layers.Dense(16)])(out1)
    x = layers.LayerNormalization(epsilon=1e-6)(out1 + layers.Dropout(0.1)(ffn))
    return keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling1D()(x)))


def _rows(est) -> list:
    return [(row.kind, row.output_shape, row.params, row.flops) for row in est.layers]


def test_a_layer_made_of_known_calls_is_exact_as_those_calls_written_out():
    model = _classifier(Block(name="block"))
    est = paramcalc.estimate(model, batch_size=3, optimizer="adam", device="cpu")
    same = paramcalc.estimate(_written_out(), batch_size=3, optimizer="adam", device="cpu")
    assert not any(row.kind == "foreign" for row in est.layers) and not est.notes
    assert _rows(est) == _rows(same)
    assert (est.params, est.flops) == (same.params, same.flops) == (model.count_params(), same.flops)
    assert est.training.memory.peak == same.training.memory.peak
    assert [row.name for row in est.layers] == [  # Keras' operations named by class, numbered in the layer
        "block/att", "block/drop1", "block/add", "block/norm1", "block/ffn/up", "block/ffn/down", "block/drop2",
        "block/add_1", "block/norm2", "pool", "head"]


def test_reading_a_layer_leaves_the_model_as_it_was_and_names_rows_the_same_each_time():
    model = _classifier(Block(name="block"))

    def state():
        return [(len(layer._inbound_nodes), len(layer._outbound_nodes), layer._called, layer._parent_path)
                for layer in model._flatten_layers()]

    before = state()
    first = [row.name for row in paramcalc.estimate(model).layers]
    assert [row.name for row in paramcalc.estimate(model).layers] == first
    assert state() == before
    assert "compute_output_spec" not in vars(model.get_layer("block").ffn)


class Outer(layers.Layer):
    """A layer without a rule holding another (a block) and a Dense."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.block = Block(name="inner_block")
        self.proj = layers.Dense(16, name="proj")

    def call(self, x):
        return self.proj(self.block(x))


def test_layers_inside_layers_are_read_in_turn_and_a_shared_one_counts_once():
    inputs = keras.Input((10, 16))
    outer = Outer(name="outer")
    model = keras.Model(inputs, outer(outer(inputs)))  # one layer called twice
    est = paramcalc.estimate(model, batch_size=2)
    assert est.params == model.count_params() and est.output_shape == (2, 10, 16)
    names = [row.name for row in est.layers]
    assert "outer/inner_block/att" in names and "outer/proj" in names and "outer@1/proj" in names
    rows = {row.name: row for row in est.layers}
    assert rows["outer@1/proj"].shared_with == "outer/proj" and rows["outer@1/proj"].params == 0
    assert rows["outer@1/proj"].flops == rows["outer/proj"].flops > 0


class Picky(layers.Layer):
    """A layer whose code needs the backend's tensors (a TensorFlow function, say), not Keras' placeholders."""

    def call(self, x):
        if not keras.ops.is_tensor(x):
            raise ValueError("needs a backend tensor")
        return x * 2.0


class Holder(layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(4, name="dense")
        self.picky = Picky(name="picky")

    def call(self, x):
        return self.picky(self.dense(x))


class Sines(layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(4, name="dense")

    def call(self, x):
        return keras.ops.sin(self.dense(x))


@pytest.mark.parametrize("layer, why", [
    (Holder(name="holder"),
     "its sublayer picky (Picky) fails on symbolic tensors (ValueError: needs a backend tensor)"),
    (Sines(name="sines"), "its call() calls layers or Keras operations paramcalc has no rule for (Sin)"),
])
def test_a_layer_not_made_of_known_calls_is_estimated_whole_and_says_why(layer, why):
    inputs = keras.Input((None, 6))
    model = keras.Model(inputs, layer(inputs))
    est = paramcalc.estimate(model, input_shape=(5, 6), batch_size=2)
    assert [row.kind for row in est.layers] == ["foreign"] and est.params == model.count_params() == 28
    assert est.output_shape == (2, 5, 4)
    note = next(n for n in est.notes if n.startswith(type(layer).__name__ + " (1 call)"))
    assert f"no paramcalc rule for this class, and {why}" in note


class CausalBlock(layers.Layer):
    """Builds its causal mask from the sequence's length, as KerasHub's decoders do: its call() fails on a
    length left free (None)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.att = layers.MultiHeadAttention(num_heads=2, key_dim=8, name="att")

    def call(self, x):
        length = keras.ops.shape(x)[1]
        mask = keras.ops.tril(keras.ops.ones((length, length), dtype="bool"))
        return self.att(x, x, attention_mask=mask[None])


class DropLast(layers.Layer):
    def call(self, x):
        return x[:, : keras.ops.shape(x)[1] - 1]


def test_a_call_that_needs_numbers_for_free_sizes_is_read_where_they_go_into_no_counted_call():
    inputs = keras.Input((None, 16))
    model = keras.Model(inputs, CausalBlock(name="block")(inputs))
    est = paramcalc.estimate(model, input_shape=("s", 16), batch_size=2)
    same = paramcalc.estimate(keras.Model(inputs, layers.MultiHeadAttention(num_heads=2, key_dim=8)(inputs, inputs)),
                              input_shape=("s", 16), batch_size=2)
    assert [row.name for row in est.layers] == ["block/att"] and not any("estimated" in n for n in est.notes)
    assert (est.params, est.flops, est.output_shape) == (same.params, same.flops, same.output_shape)
    assert est.params == model.count_params()


def test_a_call_whose_graph_depends_on_the_sizes_it_is_given_is_estimated_whole():
    inputs = keras.Input((None, 4))
    est = paramcalc.estimate(keras.Model(inputs, DropLast(name="drop_last")(inputs)), input_shape=(9, 4))
    assert [row.kind for row in est.layers] == ["foreign"] and est.output_shape[1:] == (8, 4)
    assert any("what it makes depends on the sizes it is given" in note for note in est.notes)


class OpsAttention(layers.Layer):
    """Self-attention written with keras.ops, as users write it: Dense projections, reshape, transpose,
    matmul, a scaled softmax."""

    def __init__(self, length=10, width=16, heads=2, **kwargs):
        super().__init__(**kwargs)
        self.shape_ = (length, width, heads, width // heads)
        self.q, self.k, self.v, self.o = (layers.Dense(width, name=n) for n in ("q", "k", "v", "o"))

    def call(self, x):
        ops = keras.ops
        length, width, heads, head = self.shape_
        q, k, v = (ops.transpose(ops.reshape(d(x), (-1, length, heads, head)), (0, 2, 1, 3))
                   for d in (self.q, self.k, self.v))
        scores = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / head ** 0.5)
        context = ops.reshape(ops.transpose(ops.matmul(scores, v), (0, 2, 1, 3)), (-1, length, width))
        return self.o(ops.gelu(context))


def test_a_layer_written_with_keras_ops_is_read_by_the_operations_rules():
    inputs = keras.Input((10, 16))
    model = keras.Model(inputs, OpsAttention(name="attn")(inputs))
    est = paramcalc.estimate(model, batch_size=1)
    assert not any(row.kind == "foreign" for row in est.layers) and est.params == model.count_params()
    kinds = [row.kind for row in est.layers]
    assert kinds.count("matmul") == 2 and kinds.count("view") == 4 and kinds.count("transpose") == 5
    projections = 4 * (2 * 10 * 16 * 16 + 10 * 16)
    scores = 2 * (2 * 2 * 10 * 10 * 8)  # two products per head
    elementwise = 2 * 10 * 10 * (1 + 5) + 10 * 16 * 5  # the scaling, softmax, gelu
    assert est.flops == projections + scores + elementwise


def test_keras_operations_in_a_functional_model_are_read_alike_from_its_config_and_live():
    ops = keras.ops
    inputs = keras.Input((6, 8))
    x = ops.reshape(ops.transpose(layers.Dense(8)(inputs), (0, 2, 1)), (-1, 48))
    y = ops.softmax(ops.matmul(ops.reshape(x, (-1, 6, 8)), ops.transpose(inputs, (0, 2, 1))))
    model = keras.Model(inputs, ops.silu(y[:, 0]))
    live, config = paramcalc.estimate(model, batch_size=2), paramcalc.estimate(model.get_config(), batch_size=2)
    assert [(row.kind, row.output_shape, row.flops) for row in live.layers] == \
        [(row.kind, row.output_shape, row.flops) for row in config.layers]
    assert live.output_shape == (2, 6) and not any(row.kind == "foreign" for row in live.layers)
    assert [row.kind for row in live.layers][1:] == ["transpose", "view", "view", "transpose", "matmul", "activation",
                                                     "index", "activation"]


def test_a_reshape_that_fixes_the_batch_is_not_read_as_a_view():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.ops.reshape(inputs, (2, 3, 2)))
    with pytest.raises(paramcalc.UnknownLayerError, match="Reshape"):
        paramcalc.estimate(model.get_config())
    assert paramcalc.estimate(model, batch_size=2).layers[0].kind == "foreign"


def test_einsum_repeat_expand_dims_and_cast_are_read_as_keras_shapes_them():
    ops = keras.ops
    q, k = keras.Input((5, 4, 8)), keras.Input((5, 2, 8))
    keys = ops.cast(ops.repeat(k, 2, axis=2), "float32")
    scores = ops.einsum("bqhd,bkhd->bhqk", q, keys)
    model = keras.Model([q, k], ops.expand_dims(scores, 1))
    for source in (model, model.get_config()):
        est = paramcalc.estimate(source, batch_size=3)
        assert [row.kind for row in est.layers] == ["repeat", "identity", "einsum", "unsqueeze"]
        assert est.output_shape == (3, *model.output.shape[1:]) == (3, 1, 4, 5, 5)
        assert est.layers[2].output_shape == (3, 4, 5, 5)
        assert est.layers[2].macs == 4 * 5 * 5 * 8 and est.layers[2].flops == 2 * 4 * 5 * 5 * 8  # per sample


def _table(est) -> list:
    return [(row.name, row.kind, row.output_shape, row.params, row.flops, row.shared_with) for row in est.layers]


def test_alike_blocks_are_read_once_and_copied_exactly(monkeypatch):
    from paramcalc.frontends import keras_alike

    inputs = keras.Input((10, 16))
    x = inputs
    for k in range(3):  # three blocks of one configuration, and one of another
        x = Block(name=f"block_{k}")(x)
    x = Block(ff_dim=8, name="odd")(x)
    model = keras.Model(inputs, x)
    copied = paramcalc.estimate(model, batch_size=2, optimizer="adam", device="cpu")
    monkeypatch.setattr(keras_alike, "COPY", False)
    traced = paramcalc.estimate(model, batch_size=2, optimizer="adam", device="cpu")
    assert _table(copied) == _table(traced) and copied.params == model.count_params()
    assert copied.training.memory.peak == traced.training.memory.peak
    assert [row.name for row in copied.layers if row.name.endswith("/up")] == [
        "block_0/ffn/up", "block_1/ffn/up", "block_2/ffn/up", "odd/ffn/up"]


@pytest.mark.parametrize("equation, a, b", [
    ("bqhd,bkhd->bhqk", (3, 5, 4, 8), (3, 6, 4, 8)),  # attention scores
    ("bhqk,bkhd->bqhd", (3, 4, 5, 6), (3, 6, 4, 8)),  # attention context
    ("bij,bjk->bik", (3, 5, 7), (3, 7, 2)),
    ("bi,bi->bi", (3, 4), (3, 4)),  # nothing summed: one product per element
])
def test_einsum_flops_are_torchs_flop_counter_count(equation, a, b):
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    first, second = keras.Input(a[1:]), keras.Input(b[1:])
    est = paramcalc.estimate(keras.Model([first, second], keras.ops.einsum(equation, first, second)), batch_size=a[0])
    assert est.layers[0].kind == "einsum"
    with FlopCounterMode(display=False) as counter:
        out = torch.einsum(equation, torch.zeros(a), torch.zeros(b))
    assert est.output_shape == tuple(out.shape)
    summed = set(equation.split("->")[0].replace(",", "")) - set(equation.split("->")[1])
    if summed:  # torch counts products that sum; an elementwise product it does not count
        assert est.flops_per_batch == counter.get_total_flops()
    else:
        assert counter.get_total_flops() == 0 and est.flops_per_batch == out.numel()


@pytest.mark.parametrize("kv_heads, causal", [(4, False), (2, True)])
def test_dot_product_attention_counts_torchs_products_and_a_softmax(kv_heads, causal):
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    q, k, v = keras.Input((5, 4, 8)), keras.Input((6, kv_heads, 8)), keras.Input((6, kv_heads, 8))
    model = keras.Model([q, k, v], keras.ops.dot_product_attention(q, k, v, is_causal=causal))
    est = paramcalc.estimate(model, batch_size=3)
    assert [row.kind for row in est.layers] == ["dot_product_attention"] and est.output_shape == (3, 5, 4, 8)
    # the same attention written out in torch, (batch, heads, length, width), key and value heads repeated:
    # its counter counts the two products
    tq, tk, tv = (torch.zeros(3, heads, length, 8) for heads, length in ((4, 5), (kv_heads, 6), (kv_heads, 6)))
    tk, tv = (t.repeat_interleave(4 // kv_heads, dim=1) for t in (tk, tv))
    with FlopCounterMode(display=False) as counter:
        torch.softmax(tq @ tk.transpose(-1, -2), dim=-1) @ tv
    assert 2 * est.macs_per_batch == counter.get_total_flops()
    assert est.flops_per_batch == 2 * est.macs_per_batch + 5 * 3 * 4 * 5 * 6  # and the softmax, 5 per score


def test_pad_is_read_per_axis_and_a_padded_batch_is_not():
    inputs = keras.Input((5, 6))
    model = keras.Model(inputs, keras.ops.pad(inputs, [[0, 0], [1, 2], [0, 0]]))
    for source in (model, model.get_config()):
        est = paramcalc.estimate(source, batch_size=2)
        assert est.layers[0].kind == "pad" and est.output_shape == (2, 8, 6)
    batch_padded = keras.Model(inputs, keras.ops.pad(inputs, [[1, 0], [0, 0], [0, 0]]))
    assert paramcalc.estimate(batch_padded, batch_size=2).layers[0].kind == "foreign"


def test_basic_indexing_is_read_from_a_config_and_live():
    inputs = keras.Input((5, 6))
    basic = keras.Model(inputs, inputs[:, 1:4, None])
    for source in (basic, basic.get_config()):
        est = paramcalc.estimate(source, batch_size=2)
        assert est.layers[0].kind == "index" and est.output_shape == (2, 3, 1, 6)
