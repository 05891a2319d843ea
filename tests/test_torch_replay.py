"""Repeated blocks copied instead of run again (frontends/torch_replay.py): the estimate is the one a full
run gives, row for row, the repeated block's forward runs only as often as the key rules say, a block whose
operations depend on an integer attribute is never copied wrongly, and a forward that caches in its
attributes leaves the model as it was."""

from __future__ import annotations

import pytest

from paramcalc import estimate
from paramcalc.frontends import torch_capture

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class Norm(nn.Module):
    """Written by hand, as model code does: its operations are captured, not read from a rule."""

    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Block(nn.Module):
    calls = 0

    def __init__(self, width: int, index: int, odd_extra: bool = False):
        super().__init__()
        self.index = index  # an integer attribute that does not change the computation (a layer index)
        self.odd_extra = odd_extra
        self.norm = Norm(width)
        self.up, self.down = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x, mask):
        Block.calls += 1
        h = self.down(F.silu(self.up(self.norm(x)))) * mask
        if self.odd_extra and self.index % 2:  # here the index does change the computation
            h = torch.tanh(h) + h.mean(1, keepdim=True)
        return x + h


class Stack(nn.Module):
    def __init__(self, depth: int, width: int = 8, odd_extra: bool = False, indexed: bool = True):
        super().__init__()
        self.embed = nn.Linear(width, width)  # every block's input is then made by an operation
        self.blocks = nn.ModuleList(Block(width, i if indexed else 0, odd_extra) for i in range(depth))
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        mask = torch.ones(x.shape[1], 1)
        x = self.embed(x)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(x).softmax(-1)


def _estimate(model, replay: bool, monkeypatch):
    monkeypatch.setattr(torch_capture, "REPLAY", replay)
    monkeypatch.setattr(torch_capture, "REPLAY_MIN_REPEATS", 1)  # these stacks are small
    Block.calls = 0
    est = estimate(model, input_shape=(5, 8), batch_size=4, optimizer="adam")
    data = est.to_dict()
    data.pop("notes", None)
    # a copied block reads the first call's constants (the mask): the rows that name them differ
    data["layers"] = [row for row in data["layers"] if not row["name"].startswith("constant")]
    return data, repr(est.training), Block.calls


@pytest.mark.parametrize("options", [dict(), dict(indexed=False), dict(odd_extra=True)],
                         ids=["indexed", "same-state", "index-changes-operations"])
def test_copying_repeated_blocks_gives_the_full_run_s_estimate(options, monkeypatch):
    model = Stack(6, **options)
    full, full_training, full_calls = _estimate(model, False, monkeypatch)
    copied, copied_training, copied_calls = _estimate(model, True, monkeypatch)
    assert copied == full and copied_training == full_training
    assert full_calls == 2 * 6  # two runs (two batch sizes), every block
    if options.get("odd_extra"):
        assert copied_calls == full_calls  # calls that differ by an integer attribute are never trusted
    elif options.get("indexed") is False:
        assert copied_calls == 2 * 1  # the same state: the first call is copied from the second on
    else:
        # calls differing only in an integer attribute: copied once two more recorded the same operations;
        # the run at the second batch size copies them from the second on, as the first run found them alike
        assert copied_calls == (1 + torch_capture_matches()) + 1


def test_the_second_run_copies_the_calls_the_first_found_alike(monkeypatch):
    """Two blocks differing in a layer index: the first run runs both (too few to trust), and finds them
    alike; the run at the second batch size runs the first only. The estimate is the full runs'."""
    model = Stack(2)
    full, full_training, _ = _estimate(model, False, monkeypatch)
    copied, copied_training, copied_calls = _estimate(model, True, monkeypatch)
    assert copied == full and copied_training == full_training
    assert copied_calls == 2 + 1


def torch_capture_matches() -> int:
    from paramcalc.frontends.torch_replay import MATCHES_TO_TRUST

    return MATCHES_TO_TRUST


def test_the_copied_rows_keep_each_block_s_own_names(monkeypatch):
    data, _, _ = _estimate(Stack(4), True, monkeypatch)
    modules = {row["module"] for row in data["layers"]}
    assert {f"blocks.{i}.up" for i in range(4)} <= modules and {f"blocks.{i}.norm" for i in range(4)} <= modules
    names = [row["name"] for row in data["layers"]]
    assert len(names) == len(set(names))


class Cached(nn.Module):
    """Caches a tensor computed in eval mode in an attribute, as timm's attention-bias modules do."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.cache = {}

    def forward(self, x):
        if not self.training:
            key = str(x.device)
            if key not in self.cache:
                self.cache[key] = torch.ones(4)
            return self.proj(x) * self.cache[key]
        return self.proj(x)


def test_a_forward_that_caches_in_its_attributes_leaves_the_model_as_it_was(monkeypatch):
    model = nn.Sequential(Cached(), Cached()).eval()
    monkeypatch.setattr(torch_capture, "REPLAY_MIN_REPEATS", 1)
    for replay in (False, True):
        monkeypatch.setattr(torch_capture, "REPLAY", replay)
        before = {name: dict(m.__dict__) for name, m in model.named_modules()}
        est = estimate(model, input_shape=(4,), batch_size=2)
        assert est.params == 2 * 20
        assert {name: dict(m.__dict__) for name, m in model.named_modules()} == before
        assert all(m.cache == {} for m in model if isinstance(m, Cached))
        assert "forward" not in model[0].__dict__  # the replay's wrapper is gone


def test_copying_is_kept_for_models_whose_blocks_repeat_and_a_shared_module_is_counted_under_each_parent():
    shared = nn.Linear(8, 8)
    pairs = [nn.Sequential(shared, nn.Sequential(nn.Linear(8, 8))) for _ in range(2)]
    model = nn.Sequential(nn.Sequential(*pairs), nn.Linear(8, 8))  # the shared Linear under both pairs
    assert torch_capture._most_repeated_block(model) == 2
    assert torch_capture._most_repeated_block(Stack(depth=2)) == 2
    assert torch_capture._most_repeated_block(Stack(depth=5)) == 5


def test_a_module_read_in_one_walk_is_what_torch_names():
    """The replayer reads a module's tensors and submodules in one walk: the same names, in the same
    order, as named_parameters, named_buffers and named_modules with remove_duplicate=False, with a
    module under two names, a weight tied to another, an unset bias and an unset submodule."""
    from paramcalc.frontends.torch_replay import _Tree

    shared = nn.Linear(3, 3, bias=False)
    model = nn.Sequential(nn.Sequential(shared, nn.BatchNorm1d(3)), shared, nn.Linear(3, 3))
    model[2].weight = shared.weight
    model.add_module("missing", None)
    model.register_buffer("scale", torch.ones(1))
    tree = _Tree(model)
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    assert list(tree.tensors.items()) == named
    assert tree.own == {id(t): n for n, t in named}
    assert list(tree.modules.items()) == list(model.named_modules(remove_duplicate=False))


def test_a_forward_that_changes_its_module_leaves_it_as_it_was():
    """What a forward writes into its modules (a cache, a new attribute, its parameters re-registered in
    another order) is put back after a run, and what it left alone stays the same objects."""
    from paramcalc.frontends.torch_modules import attributes_kept

    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model.cache, model.seen, model.tags = {}, [1], {"a"}
    weight, bias = model[0].weight, model[0].bias
    untouched = dict(model[1]._parameters)
    restore = attributes_kept(model)
    model.cache["x"] = 1
    model.seen.append(2)
    model.tags.add("b")
    model.extra = 3
    del model[0]._parameters["weight"]
    model[0]._parameters["weight"] = weight  # now after the bias
    restore()
    assert model.cache == {} and model.seen == [1] and model.tags == {"a"} and not hasattr(model, "extra")
    assert list(model[0]._parameters) == ["weight", "bias"] and model[0].bias is bias
    assert model[1]._parameters == untouched and all(model[1]._parameters[k] is v for k, v in untouched.items())
