"""The second batch size's shapes, replayed from the first run's ATen operations instead of running the
forward again (frontends/torch_batch_replay.py): sizes computed from the batch in Python, layouts with the
batch inside, copied calls, and the forward run again where an integer was read wrong.

Every test here (and every test that reads a model by running it) runs with ``torch_batch_replay.CHECK``
on (tests/conftest.py): the forward runs at the second batch size as well, and the replay's shapes must
equal that run's. The ``replays`` fixture (tests/conftest.py) lists what each replay came to."""

from __future__ import annotations

import pytest

from paramcalc import estimate
from paramcalc.frontends import torch_batch_replay, torch_capture

torch = pytest.importorskip("torch")
nn = torch.nn


def _same_as_two_runs(model, shape, monkeypatch, **options) -> None:
    """The estimate equals the one the forward's two runs give, row by row, in every figure."""
    replayed = estimate(model, input_shape=shape, **options).to_dict()
    with monkeypatch.context() as patch:
        patch.setattr(torch_capture, "BATCH_REPLAY", False)
        run = estimate(model, input_shape=shape, **options).to_dict()
    assert replayed == run


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm, self.fc = nn.LayerNorm(width), nn.Linear(width, width)

    def forward(self, x):
        return x + self.fc(self.norm(x)).relu()


class BatchInPython(nn.Module):
    """Sizes the forward computes from the batch and hands torch as integers, a layout with the batch
    inside (sequence first), a class token expanded to the batch, and a block repeated often enough to
    be copied."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, 12))
        self.attn = nn.MultiheadAttention(12, 3)  # sequence first: (tokens, batch, width)
        self.blocks = nn.Sequential(*(_Block(12) for _ in range(5)))
        self.head = nn.Linear(12 * 9, 4)

    def forward(self, x):
        b, n, c = x.shape
        x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1)
        x = x + torch.arange(n + 1, device=x.device, dtype=x.dtype).view(1, -1, 1)
        order = torch.arange(b, device=x.device)  # one per sample, made from the batch size
        x = x + order.to(x.dtype).view(b, 1, 1)
        seq = x.transpose(0, 1)
        seq = self.attn(seq, seq, seq, need_weights=False)[0]
        x = self.blocks(seq.transpose(0, 1).reshape(b * (n + 1), c)).view(b, n + 1, c)
        both = torch.cat([x, x.flip(0)], dim=0).view(2, b, -1)  # two views of the batch, side by side
        return self.head(both.sum(0))


def test_sizes_computed_from_the_batch_replay_as_the_forward_runs(replays, monkeypatch):
    model = BatchInPython()
    est = estimate(model, input_shape=(8, 12))
    assert replays == ["replayed"]
    assert str(est.output_shape[0]) == "B" and est.output_shape[1:] == (4,)
    out = model(torch.zeros(5, 8, 12))
    assert est.subs(B=5).output_shape == tuple(out.shape)
    _same_as_two_runs(model, (8, 12), monkeypatch, batch_size=3, optimizer="adam")


class BatchPlusOne(nn.Module):
    """Hands torch ``batch + 1``: an integer the replay reads as a constant, which then does not fit."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        padded = x.new_zeros(x.shape[0] + 1, 6)
        return self.fc(x) + padded[1:]


def test_an_integer_read_wrong_makes_the_forward_run_again(replays, monkeypatch):
    est = estimate(BatchPlusOne(), input_shape=(6,))
    assert len(replays) == 1 and replays[0] != "replayed"  # torch refused the shapes it made
    assert str(est.output_shape[0]) == "B"
    _same_as_two_runs(BatchPlusOne(), (6,), monkeypatch, batch_size=4)


class SmallBatchesOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        if x.shape[0] > 16:
            raise ValueError("batches of at most 16")
        return self.fc(x).relu()


def test_a_forward_that_fails_at_the_prime_batch_runs_at_small_ones(replays):
    est = estimate(SmallBatchesOnly(), input_shape=(3,), batch_size=4)
    assert replays == []  # the first run failed: no replay, the forward ran at BATCHES
    assert est.output_shape == (4, 3) and est.params == 12


def test_the_prime_batches_divide_no_size_or_integer_of_the_model():
    class Sized(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(97, 2 * 101)
            self.window = (103, 5)  # an integer attribute: a constant the forward may compute with

        def forward(self, x):
            return self.fc(x)

    assert torch_batch_replay.batch_sizes(Sized(), (("x", (107 * 3,)),)) == (109, 113)
    assert torch_batch_replay.batch_sizes(nn.Linear(4, 4), (("x", (4,)),)) == (97, 101)


class ChangedInPlace(nn.Module):
    """A tensor whose shape an in-place operation changes (``unsqueeze_``): that operation's record
    takes the shape it was given, in the run and in the replay."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 5)

    def forward(self, x):
        scale = torch.arange(x.shape[-1], dtype=x.dtype, device=x.device)
        scale.unsqueeze_(0)
        return self.fc(x) * scale


def test_an_operation_that_changes_a_shape_in_place_records_the_shape_it_was_given(replays):
    est = estimate(ChangedInPlace(), input_shape=(5,), batch_size=2)  # CHECK compares with a run
    assert replays == ["replayed"] and est.output_shape == (2, 5)
    row = next(r for r in est.layers if r.name == "unsqueeze_")
    assert row.input_shapes == ((5,),) and row.output_shape == (1, 5)


# Steps a forward takes with the batch size in Python, as real models do: each keeps x of shape (b, n, c)
# and hands torch integers computed from b. Hypothesis composes them; the replay must give the forward's
# shapes (CHECK compares every record with a run), without falling back to running it.
def _step_merge_batch(x, m):
    b, n, c = x.shape
    return m.fc(x.reshape(b * n, c)).view(b, n, c)


def _step_sequence_first(x, m):
    return x.transpose(0, 1).contiguous().mul(2.0).transpose(0, 1)


def _step_both_halves(x, m):
    b = x.shape[0]
    return torch.cat([x, x.flip(0)], dim=0).view(2, b, *x.shape[1:]).sum(0)


def _step_per_sample(x, m):
    b = x.size(0)
    return x + torch.arange(b, dtype=x.dtype, device=x.device).view(b, 1, 1)


def _step_token(x, m):
    b = x.shape[0]
    return torch.cat([m.token.expand(b, -1, -1), x], dim=1)[:, 1:]


def _step_new_zeros(x, m):
    b, n, c = x.shape
    return x + x.new_zeros(b * n * c).view(b, n, c)


def _step_flat(x, m):
    b, n, c = x.shape
    return x.reshape(b, n * c).unflatten(1, (n, c))


def _step_block(x, m):
    return m.blocks(x)


_STEPS = (_step_merge_batch, _step_sequence_first, _step_both_halves, _step_per_sample, _step_token,
          _step_new_zeros, _step_flat, _step_block)


class Steps(nn.Module):
    def __init__(self, steps: tuple) -> None:
        super().__init__()
        self.steps = steps
        self.fc = nn.Linear(6, 6)
        self.token = nn.Parameter(torch.zeros(1, 1, 6))
        self.blocks = nn.Sequential(*(_Block(6) for _ in range(4)))

    def forward(self, x):
        assert int(x.shape[-1]) == 6  # a size read as a Python int: torch.fx cannot trace it, it runs
        for step in self.steps:
            x = step(x, self)
        return x


def test_forwards_that_compute_with_the_batch_replay_as_they_run(replays):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])
    @given(st.lists(st.sampled_from(_STEPS), min_size=1, max_size=5), st.integers(1, 5))
    def check(steps, batch):
        replays.clear()
        est = estimate(Steps(tuple(steps)), input_shape=(7, 6), batch_size=batch)
        assert replays == ["replayed"]  # a run failing at the prime batch would have left none
        with torch.device("meta"):
            out = Steps(tuple(steps)).to("meta")(torch.zeros(batch, 7, 6, device="meta"))
        assert est.output_shape == tuple(out.shape)

    check()
