"""The casts paramcalc prices under autocast against the casts torch's autocast makes (on the CPU,
whose autocast casts the same layers' weights to bfloat16 as CUDA's does)."""

from __future__ import annotations

import pytest

import paramcalc
from paramcalc.cost.training import autocast_casts

torch = pytest.importorskip("torch")
nn = torch.nn
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from paramcalc.calibration.sweeps import cpu_lstm_context, cpu_lstm_path_under_autocast  # noqa: E402


class _ParameterCasts(TorchDispatchMode):
    """Records the size of every cast whose source lies in one of the parameters (a part of one too)."""

    def __init__(self, parameters):
        super().__init__()
        self.storages = {p.untyped_storage().data_ptr() for p in parameters}
        self.sizes: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default and args[0].untyped_storage().data_ptr() in self.storages:
            self.sizes.append(args[0].numel())
        return func(*args, **(kwargs or {}))


class _SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x)[0]


def _frozen_middle():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(288, 16),
                          nn.ReLU(), nn.Linear(16, 4, bias=False))
    model[4].weight.requires_grad_(False)  # its forward still casts it; its backward casts only the bias
    return model, [(3, 8, 8)]


CASES = {
    "conv, norm, frozen linear": _frozen_middle,
    "lstm": lambda: (nn.LSTM(8, 16, num_layers=2, batch_first=True), [(5, 8)]),
    "embedding and layer norm": lambda: (nn.Sequential(nn.Embedding(10, 16), nn.LayerNorm(16), nn.Linear(16, 4)),
                                         [(5,)]),
    "self-attention": lambda: (_SelfAttention(), [(5, 16)]),
    "attention over other widths": lambda: (nn.MultiheadAttention(16, 2, kdim=8, vdim=8, batch_first=True),
                                            [(5, 16), (6, 8), (6, 8)]),
    "attention over other tensors": lambda: (nn.MultiheadAttention(16, 2, batch_first=True),
                                             [(5, 16), (6, 16), (6, 16)]),
    "encoder stack": lambda: (nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2,
                                                    enable_nested_tensor=False), [(5, 16)]),
    "decoder layer": lambda: (nn.TransformerDecoderLayer(16, 2, 32, batch_first=True), [(5, 16), (6, 16)]),
}


def _sample(shape):
    if len(shape) == 1:  # token ids
        return torch.randint(0, 10, (2, *shape))
    return torch.randn(2, *shape)


# the LSTM on both of torch's CPU paths: oneDNN's kernels, and torch's own where oneDNN lacks the 16-bit
# primitive (AVX2-only CPUs); autocast casts the same weights on either
PATHS = [(case, "default") for case in sorted(CASES) if case != "lstm"] + [("lstm", "onednn"), ("lstm", "native")]


@pytest.mark.parametrize(("case", "path"), PATHS)
def test_autocast_casts_each_weight_tensor_as_torch_does(case, path):
    if path == "onednn" and cpu_lstm_path_under_autocast(torch, torch.bfloat16) != "onednn":
        pytest.skip("oneDNN has no 16-bit LSTM primitive on this CPU: the native path checks these casts")
    model, shapes = CASES[case]()
    inputs = [_sample(s) for s in shapes]
    casts = _ParameterCasts(model.parameters())
    with cpu_lstm_context(torch, "native" if path == "native" else "onednn"):
        with torch.autocast("cpu", dtype=torch.bfloat16), casts:
            out = model(*inputs)
    est = paramcalc.estimate(model, input_shape=shapes[0] if len(shapes) == 1 else shapes)
    predicted = [cast for row in est.layers for cast in autocast_casts(row)]
    assert sorted(elements for elements, _ in predicted) == sorted(casts.sizes)
    # backward: each cast of a trained tensor (or of its part) has a node that casts its gradient back
    assert _parameter_cast_nodes(out[0] if isinstance(out, tuple) else out) == sum(t for _, t in predicted)


# what lies between a cast of a parameter's part and the parameter in the backward graph
_PARTS = {"SplitBackward0", "SplitWithSizesBackward0", "UnbindBackward0", "UnsafeSplitBackward0"}


def _parameter_cast_nodes(out) -> int:
    def casts_a_parameter(node) -> bool:
        following = [n for n, _ in node.next_functions if n is not None]
        return any(type(n).__name__ == "AccumulateGrad" or (type(n).__name__ in _PARTS and casts_a_parameter(n))
                   for n in following)
    count, seen, stack = 0, set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        count += type(node).__name__ == "ToCopyBackward0" and casts_a_parameter(node)
        stack += [n for n, _ in node.next_functions]
    return count
