"""Random torch nn.Sequential stacks on the meta device: every module's output shape and parameter
counts equal torch's, exactly; shared modules are counted once."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paramcalc

from .oracle import saved_by_autograd
from .shapes import factorization, sizes

torch = pytest.importorskip("torch")
nn = torch.nn

ACTIVATIONS = [nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish]
DROPOUTS = [nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout]
BATCH = 2


@st.composite
def torch_stack(draw):
    """(per-sample input shape, list of modules) for a valid random stack, modules built on meta."""
    shape = [draw(sizes) for _ in range(draw(st.integers(1, 3)))]
    input_shape = tuple(shape)
    modules: list = []
    shared = None
    for _ in range(draw(st.integers(1, 7))):
        full_rank = len(shape) + 1
        options = ["linear", "linear", "flatten", "unflatten", "activation", "softmax", "dropout",
                   "identity", "nested"]
        if shared is not None and shape[-1] == shared.in_features:
            options.append("shared")
        kind = draw(st.sampled_from(options))
        if kind == "linear":
            units = draw(st.integers(1, 6))
            module = nn.Linear(shape[-1], units, bias=draw(st.booleans()), device="meta")
            for p in module.parameters():
                p.requires_grad_(draw(st.sampled_from([True, True, False])))
            if units == shape[-1] and shared is None and draw(st.booleans()):
                shared = module
            modules.append(module)
            shape[-1] = units
        elif kind == "shared":
            modules.append(shared)
            shape[-1] = shared.out_features
        elif kind == "flatten":
            # any start..end range that leaves the batch axis alone; negative spellings included
            start = draw(st.integers(1, full_rank - 1)) if full_rank > 1 else 1
            end = draw(st.integers(start, full_rank - 1)) if full_rank > 1 else 1
            if full_rank == 1:
                continue
            start_arg = draw(st.sampled_from([start, start - full_rank]))
            end_arg = draw(st.sampled_from([end, end - full_rank]))
            modules.append(nn.Flatten(start_arg, end_arg))
            shape = shape[:start - 1] + [math.prod(shape[start - 1:end])] + shape[end:]
        elif kind == "unflatten":
            axis = draw(st.integers(1, full_rank - 1))
            sizes_ = draw(factorization(shape[axis - 1]))
            modules.append(nn.Unflatten(draw(st.sampled_from([axis, axis - full_rank])), sizes_))
            known = math.prod(d for d in sizes_ if d != -1)
            new = [shape[axis - 1] // known if d == -1 else d for d in sizes_]
            shape = shape[:axis - 1] + new + shape[axis:]
        elif kind == "activation":
            modules.append(draw(st.sampled_from(ACTIVATIONS))())
        elif kind == "softmax":
            cls = draw(st.sampled_from([nn.Softmax, nn.LogSoftmax]))
            modules.append(cls(dim=draw(st.integers(-full_rank, full_rank - 1))))
        elif kind == "dropout":
            cls = draw(st.sampled_from(DROPOUTS))
            if cls in (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.FeatureAlphaDropout):
                cls = nn.Dropout  # the channel-wise variants insist on input ranks; same rule anyway
            modules.append(cls(draw(st.sampled_from([0.0, 0.5]))))
        elif kind == "identity":
            modules.append(nn.Identity())
        elif kind == "nested":
            modules.append(nn.Sequential(nn.Identity(), nn.Sequential(nn.ReLU())))
    return input_shape, modules


def _run_with_hooks(model, input_shape):
    """Output shapes of every leaf module call, in call order (a shared module appears twice)."""
    calls = []

    def hook(module, inputs, output):
        calls.append((module, tuple(output.shape)))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not m._modules]
    try:
        model(torch.empty((BATCH,) + input_shape, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return calls


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(torch_stack())
def test_random_torch_stacks_match_torch(stack):
    input_shape, modules = stack
    model = nn.Sequential(*modules)
    calls = _run_with_hooks(model, input_shape)
    est = paramcalc.estimate(model, input_shape=input_shape, batch_size=BATCH)
    assert est.framework == "torch"
    assert len(calls) == len(est.layers)
    seen = set()
    for (module, out_shape), row in zip(calls, est.layers):
        assert row.output_shape == out_shape, row.name
        if id(module) in seen:
            assert row.shared_with is not None and row.params == 0
            continue
        seen.add(id(module))
        params = list(module.parameters())
        assert row.params == sum(p.numel() for p in params), row.name
        assert row.trainable_params == sum(p.numel() for p in params if p.requires_grad), row.name
        assert row.buffers == sum(b.numel() for b in module.buffers()), row.name
    assert est.params == sum(p.numel() for p in model.parameters())
    assert est.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert est.non_trainable_params == sum(p.numel() for p in model.parameters() if not p.requires_grad)


def _to_cpu(modules: list) -> list:
    """The stack's modules materialised on the CPU (a shared module stays one module), freezing kept."""
    real: dict = {}
    out = []
    for m in modules:
        if id(m) not in real:
            frozen = {name for name, p in m.named_parameters() if not p.requires_grad}
            copy = m.to_empty(device="cpu")
            for name, p in copy.named_parameters():
                with torch.no_grad():
                    p.normal_()
                p.requires_grad_(name not in frozen)
            real[id(m)] = copy
        out.append(real[id(m)])
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(torch_stack())
def test_random_torch_stacks_keep_what_autograd_keeps(stack):
    # the activations paramcalc predicts for the backward are the bytes torch's saved-tensor hooks see
    # (beyond parameters, buffers and the input batch), whatever is frozen or shared
    input_shape, modules = stack
    model = nn.Sequential(*_to_cpu(modules)).train()
    x = torch.randn((BATCH,) + input_shape)
    est = paramcalc.estimate(model, input_shape=input_shape, batch_size=BATCH, optimizer="sgd", device="cpu")
    assert est.training.memory.activations == saved_by_autograd(torch, model, x)
