"""torch modules torch.fx cannot trace, read by running their forward on meta tensors: shapes, parameters
and FLOPs against torch itself, the batch kept symbolic, what autograd saves against saved-tensor hooks,
rows by module, integer and keyword inputs, and the errors for what meta tensors cannot run."""

from __future__ import annotations

import pytest

import paramcalc
from paramcalc import estimate

from .autograd_kept import kept_by_autograd

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class SizeBranch(nn.Module):
    """Branches on a size (torch.fx cannot) and calls functions between modules."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.scale = nn.Parameter(torch.ones(16))
        self.head = nn.Conv1d(4, 6, 3)

    def forward(self, x):
        h = self.proj(x)
        if h.shape[-1] == 16:  # a Python branch on a size
            h = F.gelu(h) * self.scale
        h = F.pad(h, (1, 3))
        q = h.view(h.shape[0], 4, -1)
        att = F.scaled_dot_product_attention(q, q, q)
        return torch.einsum("bcl,bcl->bc", self.head(att), self.head(att))


def _flops(module, *inputs, **keywords) -> tuple:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = module(*inputs, **keywords)
    return out, counter.get_total_flops()


def test_a_forward_fx_cannot_trace_is_exact_and_keeps_the_batch_symbolic():
    model = SizeBranch().to("meta")
    out, flops = _flops(model, torch.empty(5, 8, device="meta"))
    est = estimate(model, input_shape=(8,))
    assert est.params == sum(p.numel() for p in model.parameters()) == 8 * 16 + 16 + 16 + 4 * 6 * 3 + 6
    assert est.output_shape[1:] == tuple(out.shape[1:])
    assert str(est.output_shape[0]) == "B"  # sizes that follow the batch are formulas in it
    at5 = est.subs(B=5)
    assert at5.output_shape == tuple(out.shape) and 2 * at5.macs_per_batch == flops
    assert any("meta tensors" in note for note in est.notes)


def test_the_summary_shows_the_module_tree_not_aten_operations():
    est = estimate(SizeBranch(), input_shape=(8,), batch_size=2)
    text = est.summary()
    assert "proj (Linear)" in text and "view" not in text  # the model's own views have no row
    every_call = est.summary(depth=0)
    assert "gelu (gelu)" in every_call and "view (view)" in every_call
    rows = est.by_module(1)
    assert sum(r.params for r in rows) == est.params
    assert sum(r.flops_per_batch for r in rows) == est.flops_per_batch


def test_module_rows_sum_their_submodules_to_the_chosen_depth():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(4, 4), nn.ReLU())

        def forward(self, x):
            return self.inner(x) + x.size(0) * 0  # the size read keeps torch.fx out

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block(), Block()])

        def forward(self, x):
            for block in self.blocks:
                if x.shape[0] > 0:
                    x = block(x)
            return x

    est = estimate(Net(), input_shape=(4,))
    assert [(r.name, r.type, r.depth, r.params) for r in est.by_module(2)] == [
        ("blocks", "ModuleList", 1, 40), ("blocks.0", "Block", 2, 20), ("blocks.1", "Block", 2, 20)]
    assert [r.name for r in est.by_module(4)][-2:] == ["blocks.1.inner.0", "blocks.1.inner.1"]
    with pytest.raises(ValueError, match="depth"):
        est.by_module(0)


def test_token_ids_and_keyword_inputs():
    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(100, 8)
            self.out = nn.Linear(8, 3)

        def forward(self, input_ids=None, attention_mask=None, scale=1.0):
            h = self.embed(input_ids)
            if h.shape[1] > 512:  # a branch on a size: read by running it
                h = h[:, :512]
            if attention_mask is not None:
                h = h * attention_mask.unsqueeze(-1)
            return {"logits": self.out(h) * scale}

    est = estimate(Tagger(), input_shape={"input_ids": (12,)}, batch_size=3)
    assert est.output_shape == (3, 12, 3) and est.params == 100 * 8 + 8 * 3 + 3
    assert any("input_ids" in note and "int64" in note for note in est.notes)
    both = estimate(Tagger(), input_shape={"input_ids": (12,), "attention_mask": (12,)}, batch_size=3)
    assert [name for name, _ in both.inputs] == ["input_ids", "attention_mask"]
    assert both.flops_per_batch > est.flops_per_batch  # the mask's multiply is counted
    with pytest.raises(paramcalc.SpecError, match="names no input 'mask'"):
        estimate(Tagger(), input_shape={"mask": (12,)})


def _kept_by_autograd(model, x) -> int:
    """Bytes of the storages autograd saves in ``model``'s forward on ``x``, each once, weights left out."""
    return kept_by_autograd(model, lambda: model(x))


def _kept_in_a_cpu_run(module, x, shape: tuple) -> tuple:
    """(what autograd saves in a real CPU forward of ``module`` on ``x``, the estimate of training its
    meta copy on the CPU at ``x``'s batch size)."""
    kept = _kept_by_autograd(module, x)
    est = estimate(module.to("meta"), input_shape=shape, batch_size=x.shape[0], optimizer="sgd", device="cpu")
    return kept, est


def test_saved_activations_are_what_autograd_saves():
    model = SizeBranch().to("meta")
    kept = _kept_by_autograd(model, torch.empty(4, 8, device="meta"))
    est = estimate(model, input_shape=(8,), batch_size=4, optimizer="sgd", device="cpu")
    # the input batch, which autograd keeps for the first product, is counted apart
    assert est.training.memory.activations + est.training.memory.input_batch == kept


class GroupedAttention(nn.Module):
    """Causal attention with two query heads per key head (grouped-query), through
    F.scaled_dot_product_attention."""

    def __init__(self, dropout: float):
        super().__init__()
        self.q, self.kv, self.dropout = nn.Linear(64, 64), nn.Linear(64, 64), dropout

    def forward(self, x):
        b, s, _ = x.shape
        q = self.q(x).view(b, s, 4, 16).transpose(1, 2)
        k, v = (t.view(b, s, 2, 16).transpose(1, 2) for t in self.kv(x).chunk(2, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout, enable_gqa=True)
        return out.transpose(1, 2).reshape(b, s, 64)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_attention_keeps_what_the_cpu_kernel_keeps(dropout):
    """On the meta device torch's attention takes the math path (keeping the probabilities); on the CPU,
    without dropout, the fused kernel (a log-sum-exp per query instead). The estimate keeps what a real
    CPU run keeps, both ways."""
    torch.manual_seed(0)
    kept, est = _kept_in_a_cpu_run(GroupedAttention(dropout), torch.randn(2, 32, 64), (32, 64))
    assert est.training.memory.activations + est.training.memory.input_batch == kept
    fused = [r.name for r in est.layers if "flash_attention" in r.type]
    assert bool(fused) == (dropout == 0)


class Positions(nn.Module):
    """Token, type and position embeddings as BERT and OPT make them: the types gathered from a buffer
    and expanded over the batch, the positions sliced from a buffer (and shifted by an integer add)."""

    def __init__(self):
        super().__init__()
        self.tokens, self.types, self.places = nn.Embedding(50, 8), nn.Embedding(2, 8), nn.Embedding(20, 8)
        self.register_buffer("positions", torch.arange(16)[None])
        self.register_buffer("type_ids", torch.zeros(1, 16, dtype=torch.long))

    def forward(self, input_ids):
        b, s = input_ids.shape
        positions = self.positions[:, :s]
        types = torch.gather(self.type_ids.expand(positions.shape[0], -1), 1, positions).expand(b, s)
        return self.tokens(input_ids) + self.types(types) + self.places(positions + 2) + self.places(positions)


class _Heads(nn.Module):
    """Attention of two heads, under a boolean causal mask expanded over the batch (torch's CPU dispatch
    turns it into an additive float mask, which the fused kernel's backward keeps whole), or on a key laid
    out column-major, as some timm models make it (its last axis not contiguous: the math path, which
    keeps the probabilities); a tanh last, which keeps its own output."""

    def __init__(self, boolean_mask: bool = False, column_major_key: bool = False):
        super().__init__()
        self.qkv = nn.Linear(32, 96)
        self.boolean_mask, self.column_major_key = boolean_mask, column_major_key

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, 2, 16).permute(2, 0, 3, 1, 4)
        mask = None
        if self.boolean_mask:
            mask = torch.ones(1, 1, s, s, dtype=torch.bool, device=x.device).tril().expand(b, -1, -1, -1)
        if self.column_major_key:
            k = k.transpose(-1, -2).contiguous().transpose(-1, -2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, s, 32)
        return torch.tanh(out)


@pytest.mark.parametrize("model, shape, x", [
    (Positions, (16,), lambda: torch.randint(0, 50, (4, 16))),
    (lambda: _Heads(boolean_mask=True), (8, 32), lambda: torch.randn(4, 8, 32)),
])
def test_saved_tensors_made_from_buffers_and_masks_as_a_real_cpu_run_keeps_them(model, shape, x):
    """An expanded view keeps its base's storage, smaller than the view; a buffer (and a slice of it) kept
    for a backward costs nothing beyond the buffer; integer positions made by an operation that needs no
    gradient are kept by the Embedding that reads them; a boolean mask is kept as the float mask torch
    makes of it; the forward's last operation keeps what it made (tanh its output)."""
    torch.manual_seed(0)
    kept, est = _kept_in_a_cpu_run(model(), x(), shape)
    assert est.training.memory.activations + est.training.memory.input_batch == kept


def test_a_parameter_read_by_a_product_gets_its_weight_gradient():
    class Raw(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(8, 16))

        def forward(self, x):
            return torch.addmm(torch.zeros(16), x, self.w) if x.shape[0] else x  # made on the meta device

    est = estimate(Raw(), input_shape=(8,), batch_size=4, optimizer="sgd")
    products = 2 * 4 * 8 * 16
    # no input gradient product (the input needs none); the weight gradient is one more product
    assert est.training.wgrad_flops == products
    assert est.training.dgrad_flops == 4 * 16  # the added term's elementwise backward only


def test_parameters_of_a_module_the_forward_never_calls_are_counted_and_named():
    class Partial(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(4, 4)
            self.spare = nn.Linear(4, 100)

        def forward(self, x):
            return self.used(x) if x.shape[0] else x

    est = estimate(Partial(), input_shape=(4,))
    assert est.params == 20 + 500
    assert any("spare" in note and "did not call" in note for note in est.notes)


def test_weight_norm_counts_what_the_module_holds():
    conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 8, 3), dim=0)
    model = nn.Sequential(conv)
    est = estimate(model, input_shape=(4, 10))
    assert est.params == sum(p.numel() for p in model.parameters()) == 8 * 4 * 3 + 8 + 8


def test_a_value_read_from_a_tensor_is_a_clear_error():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Identity()

        def forward(self, x):
            return x if bool((x > 0).all()) else -x

    with pytest.raises(paramcalc.SpecError, match="reads the value of a tensor") as info:
        estimate(Gate(), input_shape=(3,))
    assert "register_torch_module" in str(info.value)


def test_a_data_dependent_shape_names_the_operation():
    class Picks(nn.Module):
        def forward(self, x):
            return x[x > 0] if x.dim() else x

    with pytest.raises(paramcalc.SpecError, match="depends on the values") as info:
        estimate(Picks(), input_shape=(3,))
    assert "nonzero" in str(info.value) or "masked_select" in str(info.value) or "index" in str(info.value)



def test_an_error_in_a_module_s_own_code_names_that_module_not_an_operation():
    class Checks(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def forward(self, x):
            y = self.proj(x)
            if y.shape[-1] != 6:
                raise ValueError("expected 6 features")
            return y

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Checks()])

        def forward(self, x):
            return self.blocks[0](x) if x.shape[-1] == 4 else x

    with pytest.raises(paramcalc.SpecError, match="failed in blocks.0 in its Python code, after aten.") as info:
        estimate(Outer(), input_shape=(4,))
    assert info.value.layer == "blocks.0" and "expected 6 features" in str(info.value)

    class Early(nn.Module):
        def forward(self, x):
            if x.shape[-1] == 4:
                raise ValueError("no")
            return x

    with pytest.raises(paramcalc.SpecError, match="in its Python code, before any operation: ValueError: no"):
        estimate(Early(), input_shape=(4,))


def test_a_symbolic_size_is_refused_with_the_input_named():
    with pytest.raises(paramcalc.SpecError, match="input 'x' has the size n"):
        estimate(SizeBranch(), input_shape={"x": ("n",)})


def test_why_torch_fx_could_not_trace_names_the_line_of_the_forward():
    """A Python function on a traced size (``math.sqrt``) stops torch.fx: the message quotes the line."""
    import math

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 8)

        def forward(self, x):
            return self.proj(x) / math.sqrt(x.size(-1))

    est = estimate(Scaled(), input_shape=(4, 8), batch_size=2)
    assert est.params == 72 and any("math.sqrt(x.size(-1))" in note for note in est.notes)
    with pytest.raises(paramcalc.SpecError, match=r"test_torch_capture.py:\d+ in forward: return self.proj"):
        estimate(Scaled(), input_shape=("n", 8))


def test_a_forward_that_branches_on_the_batch_is_refused_where_it_runs_twice(monkeypatch):
    # the replay at the second batch size (torch_batch_replay) follows the operations the first run
    # took; where the forward runs at both batch sizes, a branch on the batch between them is seen
    from paramcalc.frontends import torch_capture

    monkeypatch.setattr(torch_capture, "BATCH_REPLAY", False)

    class ByBatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.a(x) if x.shape[0] % 2 else self.b(self.a(x))

    with pytest.raises(paramcalc.SpecError, match="branches on the batch size"):
        estimate(ByBatch(), input_shape=(2,))


def test_the_json_names_each_row_s_module():
    data = estimate(SizeBranch(), input_shape=(8,), batch_size=2).to_dict()
    modules = {row["name"]: row["module"] for row in data["layers"]}
    assert modules["proj"] == "proj" and modules["scale"] == "" and modules["head"] == "head"


class _Attention(nn.Module):
    """nn.MultiheadAttention on one tensor, or with its key and value apart from the query."""

    def __init__(self, need_weights: bool, dropout: float, apart: bool):
        super().__init__()
        self.attention = nn.MultiheadAttention(32, 4, dropout=dropout, batch_first=True)
        self.need_weights, self.apart = need_weights, apart

    def forward(self, x):
        kv = x * 2 if self.apart else x
        return self.attention(x, kv, kv, need_weights=self.need_weights)[0]


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("apart", [False, True])
def test_multihead_attention_keeps_what_its_path_keeps(need_weights, dropout, apart):
    """need_weights=True writes the math out; False calls scaled_dot_product_attention, fused on the CPU
    without dropout (torchvision's ViT): each keeps other tensors, by storage, as a real CPU run shows."""
    torch.manual_seed(0)
    kept, est = _kept_in_a_cpu_run(_Attention(need_weights, dropout, apart), torch.randn(3, 10, 32), (10, 32))
    assert est.training.memory.activations + est.training.memory.input_batch == kept


class _ChannelsLastNorm(nn.LayerNorm):
    """ConvNeXt's LayerNorm2d: F.layer_norm with the module's weight and bias over the channels, moved last."""

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


def test_a_functional_norm_applies_its_affine_terms_in_its_own_kernel():
    """torch.fx reads F.layer_norm(x, shape, weight, bias) as a norm and its affine terms; torch runs them
    in one kernel that keeps the input and the statistics, not the normalised values."""
    torch.manual_seed(0)
    kept, est = _kept_in_a_cpu_run(nn.Sequential(nn.Conv2d(3, 8, 3), _ChannelsLastNorm(8), nn.Conv2d(8, 4, 1)), torch.randn(2, 3, 10, 10), (3, 10, 10))
    assert est.training.memory.activations + est.training.memory.input_batch == kept


class _ChannelDropout(nn.Module):
    """nn.Dropout2d and torchvision's stochastic depth (by row, as ConvNeXt and EfficientNet drop whole
    residual branches) between convolutions."""

    def __init__(self, stochastic_depth):
        super().__init__()
        self.stochastic_depth = stochastic_depth
        self.a, self.drop, self.b = nn.Conv2d(3, 8, 3), nn.Dropout2d(0.3), nn.Conv2d(8, 8, 1)

    def forward(self, x):
        h = self.drop(self.a(x))
        return h + self.stochastic_depth(self.b(h), 0.2, "row")


def test_dropouts_of_whole_channels_and_samples_keep_a_noise_tensor_of_that_size():
    from tests.torchvision_zoo import load

    torchvision = load()
    if torchvision is None:
        pytest.skip("torchvision is not installed")
    torch.manual_seed(0)
    kept, est = _kept_in_a_cpu_run(_ChannelDropout(torchvision.ops.stochastic_depth).train(), torch.randn(2, 3, 10, 10), (3, 10, 10))
    assert est.training.memory.activations + est.training.memory.input_batch == kept


def test_attention_on_a_key_whose_last_axis_is_strided_keeps_what_the_math_path_keeps():
    torch.manual_seed(0)
    kept, est = _kept_in_a_cpu_run(_Heads(column_major_key=True), torch.randn(2, 8, 32), (8, 32))
    assert est.training.memory.activations + est.training.memory.input_batch == kept
    assert not [r.name for r in est.layers if "flash_attention" in r.type]


class _InPlaceActivation(nn.Module):
    """A norm, then an activation that writes its input in place (timm's BatchNormAct2d, TResNet):
    autograd keeps that one storage for both."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)
        self.act = nn.LeakyReLU(inplace=True)

    def forward(self, x):
        h = self.a(x)
        if h.shape[1] == 8:  # a branch on a size: read by running the forward
            h = F.batch_norm(h, None, None, training=True)
        return self.b(self.act(h)).relu_()


def test_an_in_place_operation_keeps_one_storage_with_its_input():
    torch.manual_seed(0)
    kept, est = _kept_in_a_cpu_run(_InPlaceActivation(), torch.randn(2, 3, 10, 10), (3, 10, 10))
    assert est.training.memory.activations + est.training.memory.input_batch == kept


class _AttentionTwice(nn.Module):
    """One nn.MultiheadAttention called with need_weights=False, then with its default (True)."""

    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(32, 4, batch_first=True)

    def forward(self, x):
        h = self.attention(x, x, x, need_weights=False)[0]
        return self.attention(h, h, h)[0]


def test_a_module_called_with_other_options_takes_each_call_s_path_and_its_weights_once():
    torch.manual_seed(0)
    kept, est = _kept_in_a_cpu_run(_AttentionTwice(), torch.randn(3, 10, 32), (10, 32))
    assert est.training.memory.activations + est.training.memory.input_batch == kept
    assert est.params == sum(p.numel() for p in _AttentionTwice().parameters())


class _StridedInputs(nn.Module):
    """Known modules called on strided tensors, as SwiftFormer, NextViT and ConViT call them: a Linear on
    a permuted input (torch copies it to 2-D and keeps the copy, once per Linear), a Linear on an
    expanded input, and a GroupNorm on a channel slice (copied whole before its kernel)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.query, self.key = nn.Linear(8, 8), nn.Linear(8, 8)
        self.expanded = nn.Linear(8, 8)
        self.norm = nn.GroupNorm(1, 4)
        self.token = nn.Parameter(torch.zeros(1, 1, 8))

    def forward(self, x):
        h = self.conv(x)
        if h.shape[1] != 8:  # a branch on a size: read by running the forward
            raise ValueError(h.shape)
        tokens = h.flatten(2).permute(0, 2, 1)
        mixed = self.query(tokens) * self.key(tokens)
        token = self.expanded(self.token.expand(x.shape[0], 3, 8))
        half = self.norm(h[:, :4])
        return mixed.sum() + token.sum() + half.sum()


def test_a_known_module_on_a_strided_input_keeps_the_copy_its_kernel_makes():
    torch.manual_seed(0)
    kept, est = _kept_in_a_cpu_run(_StridedInputs(), torch.randn(2, 3, 10, 10), (3, 10, 10))
    assert est.training.memory.activations + est.training.memory.input_batch == kept
    assert est.params == sum(p.numel() for p in _StridedInputs().parameters())



def test_an_estimate_leaves_nothing_of_its_runs_alive():
    # autograd's graph holds the saved-tensor hooks as long as the run's tensors live: a hook holding the
    # recorder, or keeping an operation's own output, made a cycle through C++ that no collector frees,
    # and every estimate leaked its records and tensors (a Swin-T 5 MiB, 17,000 objects)
    import gc

    from paramcalc.frontends.torch_capture import _Record, _Recorder

    def alive() -> tuple:
        gc.collect()
        objects = gc.get_objects()
        return (sum(isinstance(o, (_Record, _Recorder)) for o in objects),
                sum(isinstance(o, torch.Tensor) and o.is_meta for o in objects))

    model = SizeBranch()
    estimate(model, input_shape=(8,), batch_size=2)
    before = alive()
    for _ in range(3):
        estimate(model, input_shape=(8,), batch_size=2)
    assert alive() == before



def test_a_forward_that_runs_a_backward_of_its_own_is_read():
    # a physics-informed network returns derivatives of its output: the saved-tensor hooks keep weak
    # references, which the backward inside the forward still reads
    class PINN(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))

        def forward(self, x):
            x = x.requires_grad_(True)
            u = self.net(x)
            (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
            return torch.cat([u, du], dim=-1)

    est = estimate(PINN(), input_shape=(2,), batch_size=3)
    assert est.params == 2 * 16 + 16 + 16 + 1 and est.output_shape == (3, 3)
