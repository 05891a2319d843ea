"""A kind describes its work once, in its own file, and the cost model prices it: torch's GLU (a built-in
kind written as one file plus its torch mapping) and a user's own kind registered from outside paramcalc,
each trained for real in torch and compared with what autograd keeps and what torch's allocator holds."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import paramcalc
from paramcalc import Layer, Weight, register_layer, register_torch_module
from paramcalc.core.dims import prod
from paramcalc.core.work import SavingRules, Work, inputs_kept

from .properties.oracle import saved_by_autograd

torch = pytest.importorskip("torch")
nn = torch.nn


def measured_peak(model, x) -> int:
    """Bytes torch's CPU allocator holds at the peak of an Adam step, beyond the input batch."""
    from paramcalc.calibration.sweeps import peak_rise

    optimizer = torch.optim.Adam(model.parameters())

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(x).pow(2).mean().backward()
        optimizer.step()
    for _ in range(3):
        step()
    optimizer.zero_grad(set_to_none=True)
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    alive = sum(t.untyped_storage().nbytes() for t in [*model.parameters(), *state])
    return alive + peak_rise(torch, "cpu", step)


def predicted_peak(est) -> int:
    memory = est.training.memory
    return memory.peak - memory.input_batch


def test_glu_is_one_file_and_prices_like_any_kind():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.GLU(), nn.Linear(128, 256), nn.GLU(dim=1), nn.Linear(128, 10))
    x = torch.randn(32, 64)
    est = paramcalc.estimate(model, input_shape=(64,), batch_size=32, optimizer="adam", device="cpu-dev-torch")
    assert est.params == sum(p.numel() for p in model.parameters())
    assert est.output_shape == tuple(model(x).shape)
    assert [r.kind for r in est.layers].count("glu") == 2
    assert est.training.memory.activations == saved_by_autograd(torch, model, x)  # GluBackward0 keeps its input
    assert predicted_peak(est) == pytest.approx(measured_peak(model, x), rel=0.01)
    glu_seconds = dict(est.training.layer_seconds)["1"]
    assert glu_seconds > 0  # a memory pass, priced
    with pytest.raises(paramcalc.ShapeError, match="whose size 5 is not even"):
        paramcalc.estimate(nn.Sequential(nn.Linear(4, 5), nn.GLU()), input_shape=(4,))


class FeatureGate(nn.Module):
    """A user's own module: each feature scaled by a learnt gate, x * sigmoid(w)."""

    def __init__(self, features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(features))

    def forward(self, x):
        return x * torch.sigmoid(self.weight)


@register_layer("feature_gate")
@dataclass(frozen=True)
class Gate(Layer):
    """The user's kind for FeatureGate: its shapes and weights, its work and what its backward keeps."""

    def infer(self, inputs, ctx):
        x = ctx.single(inputs)
        features = x.shape[-1]
        return ctx.result(x, weights=[Weight("weight", (features,))], flops=4 * features + x.numel)

    def work(self, call) -> Work:
        # reads its input and writes its output: one memory pass
        return self.described(memory_elements=2 * prod(call.output_shape))

    def saved(self, call, rules: SavingRules) -> list:
        # the product keeps its input and the gate; the sigmoid keeps its output (the same gate)
        gate = ((call.name, "gate"), call.input_shapes[0][-1] * rules.activation_bytes)
        return inputs_kept(call, rules)[:1] + [gate]


register_torch_module(FeatureGate, lambda module: Gate())


def test_a_users_own_kind_is_priced_and_its_memory_counted_like_a_builtin():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), FeatureGate(256), nn.ReLU(), nn.Linear(256, 10))
    x = torch.randn(64, 64)
    est = paramcalc.estimate(model, input_shape=(64,), batch_size=64, optimizer="adam", device="cpu-dev-torch")
    gate = est.row("1")
    assert gate.kind == "feature_gate" and gate.params == 256
    assert est.params == sum(p.numel() for p in model.parameters())
    # what autograd keeps: the gate's input and its sigmoid, the ReLU's output, the Linears' inputs
    assert est.training.memory.activations == saved_by_autograd(torch, model, x)
    assert predicted_peak(est) == pytest.approx(measured_peak(model, x), rel=0.01)
    assert dict(est.training.layer_seconds)["1"] > 0
    assert not any("does not describe its work" in note for note in est.notes)


@register_layer("undescribed_gate")
@dataclass(frozen=True)
class UndescribedGate(Layer):
    def infer(self, inputs, ctx):
        return ctx.result(ctx.single(inputs))


def test_a_kind_that_does_not_describe_its_work_is_said_to_be_priced_by_default():
    model = paramcalc.Sequential([paramcalc.Dense(8), UndescribedGate(name="mine"), paramcalc.Dense(2)])
    est = paramcalc.estimate(model, input_shape=(4,), batch_size=2, optimizer="adam")
    (note,) = [n for n in est.notes if "does not describe its work" in n]
    assert "'undescribed_gate'" in note and "'mine'" in note and "keeping nothing" in note


def _described_macs(row) -> int:
    work = row.layer.work(row)
    return sum(m * k * n for m, k, n in work.weight_products + work.state_products) + work.activation_macs


def _drift(est, windowed: dict) -> list:
    """Rows whose described products do not add up to the MACs the kind counts: the step-time model and
    the FLOP count would then describe two different layers. ``windowed`` gives, by row name, the MACs
    of a per-channel window stage that the kind describes as a memory pass instead of a product."""
    return [(row.name, row.kind, _described_macs(row), row.macs_per_batch) for row in est.layers
            if row.layer is not None and _described_macs(row) + windowed.get(row.name, 0) != row.macs_per_batch]


class _SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(32, 4, batch_first=True)

    def forward(self, x):
        return self.attention(x, x, x)[0]


@pytest.mark.parametrize("name", ["lstm_projected", "gru", "convs", "attention", "transformer", "mlp", "conv_lstm"])
def test_the_products_a_torch_kind_describes_are_the_macs_it_counts(name):
    model, shape = {
        "lstm_projected": (nn.LSTM(16, 32, num_layers=2, proj_size=8, batch_first=True, bidirectional=True), (10, 16)),
        "gru": (nn.GRU(16, 32, num_layers=2, batch_first=True), (10, 16)),
        "convs": (nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 3, groups=2),
                                nn.ConvTranspose2d(16, 4, 3, 2)), (3, 16, 16)),
        "attention": (_SelfAttention(), (10, 32)),
        "transformer": (nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), (10, 32)),
        "mlp": (nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)), (16,)),
        "conv_lstm": (paramcalc.Sequential([paramcalc.ConvLSTM(filters=4, kernel_size=3, strides=2, padding="same",
                                                               return_sequences=True)]), (5, 9, 8, 3)),
    }[name]
    est = paramcalc.estimate(model, input_shape=shape, batch_size=4)
    assert est.macs > 0 and _drift(est, {}) == []


def test_a_separable_convolution_is_priced_as_its_two_stages():
    """Keras SeparableConv2D: a depthwise stage (a memory pass over a window of each channel) and a 1x1
    product; its backward keeps the depthwise stage's output, channels x depth_multiplier wide."""
    spec = paramcalc.Sequential([paramcalc.SeparableConv(filters=8, kernel_size=(3, 3), depth_multiplier=2,
                                                         activation="relu", rank=2)])
    est = paramcalc.estimate(spec, input_shape=(16, 16, 3), batch_size=4)
    row = est.layers[0]
    positions, middle = 4 * 14 * 14, 3 * 2
    assert _drift(est, {row.name: positions * middle * 9}) == []
    saved = dict(row.layer.saved(row, SavingRules(framework="keras")))
    assert saved[(row.name, "depthwise")] == positions * middle * 4
