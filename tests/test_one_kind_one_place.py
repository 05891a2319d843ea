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
