"""Traced torch programs that real models are made of: functional pooling and layer norm, chunk and split,
the model's own size checks, subclasses of known modules, and modules the forward never calls. Each is
compared with torch running the module on the meta device."""

from __future__ import annotations

import pytest

import paramcalc
from paramcalc.core.errors import ShapeError

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


def real(module, shape, batch=2):
    with torch.no_grad():
        out = module.to("meta")(torch.empty(batch, *shape, device="meta"))
    outs = out if isinstance(out, tuple) else (out,)
    return sum(p.numel() for p in module.parameters()), [tuple(o.shape) for o in outs]


def check(module, shape, batch=2):
    params, shapes = real(module, shape, batch)
    est = paramcalc.estimate(module, input_shape=shape, batch_size=batch)
    assert est.params == params
    assert [tuple(s) for s in est.output_shapes] == shapes
    return est


class FunctionalPools(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        x = F.max_pool2d(self.conv(x), 3, stride=2, padding=1, ceil_mode=True)
        x = F.avg_pool2d(x, kernel_size=(2, 3), stride=(1, 2))
        x = F.adaptive_max_pool2d(x, (2, 1))
        return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)


def test_functional_pools_as_torch_computes_them():
    check(FunctionalPools(), (3, 33, 31))


class ChannelsLastNorm(nn.LayerNorm):
    """ConvNeXt's LayerNorm2d: a LayerNorm subclass with its own forward, calling F.layer_norm."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def test_functional_layer_norm_counts_the_parameters_it_reads():
    est = check(nn.Sequential(nn.Conv2d(3, 16, 1), ChannelsLastNorm(16)), (3, 8, 8))
    assert est.params == 3 * 16 + 16 + 2 * 16


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 64)

    def forward(self, x):
        a, b = self.proj(x).chunk(2, dim=-1)
        c, d = torch.split(a, [12, 20], dim=-1)
        return b * torch.sigmoid(torch.cat([d, c], dim=-1))


def test_chunk_and_split_give_each_piece_its_size():
    check(Gated(), (5, 16))


class OddChunks(nn.Module):
    def forward(self, x):
        a, b, c = x.chunk(3, dim=1)
        return a.sum() + b.sum() + c.sum()


def test_a_chunk_that_yields_fewer_pieces_than_the_model_unpacks_is_an_error_naming_it():
    with pytest.raises(ShapeError, match=r"chunk\(3\) of an axis of 4 gives 2 pieces"):
        paramcalc.estimate(OddChunks(), input_shape=(4,), batch_size=2)


class Checked(nn.Module):
    """As torchvision's ViT checks its image size before patching."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        n, w = x.shape
        torch._assert(w == 8, f"Wrong width! Expected {8} but got {w}!")
        return self.fc(x)


def test_the_models_own_size_check_passes_fails_and_becomes_an_assumption():
    check(Checked(), (8,))
    with pytest.raises(ShapeError, match="the model's own check fails: Wrong width"):
        paramcalc.estimate(Checked(), input_shape=(9,), batch_size=2)


class Conv3DSimple(nn.Conv3d):
    """torchvision's video models: a subclass that changes __init__ only, read as its base."""

    def __init__(self, cin, cout):
        super().__init__(cin, cout, kernel_size=(3, 3, 3), padding=1, bias=False)


class OwnForward(nn.Linear):
    def forward(self, x):
        return super().forward(x).relu()


def test_a_subclass_keeping_its_bases_forward_is_read_as_the_base_one_with_its_own_is_traced():
    est = check(nn.Sequential(Conv3DSimple(3, 4), nn.ReLU()), (3, 4, 6, 6))
    assert est.layers[0].kind == "conv" and est.layers[0].type == "Conv3DSimple"
    from paramcalc.core.registry import torch_converter

    assert torch_converter(Conv3DSimple) is not None and torch_converter(OwnForward) is None


class WithAuxiliary(nn.Module):
    """googlenet's pattern: an auxiliary head called in training only."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(8, 8)
        self.aux = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.Linear(32, 3))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = self.body(x)
        if self.training:
            return self.head(x), self.aux(x)
        return self.head(x)


def test_parameters_of_modules_the_forward_never_calls_are_counted_and_named():
    model = WithAuxiliary().eval()
    est = check(model, (8,))
    assert est.params == sum(p.numel() for p in model.parameters())
    assert any("modules the forward did not call (aux)" in note for note in est.notes)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning")
@pytest.mark.parametrize("batch_first", [True, False])
def test_nn_transformer_with_its_size_checks_is_the_encoder_then_the_decoder(batch_first):
    model = nn.Transformer(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=3, dim_feedforward=64,
                           batch_first=batch_first).to("meta")
    src, tgt = (torch.empty(3, 10, 32, device="meta"), torch.empty(3, 7, 32, device="meta"))
    if not batch_first:
        src, tgt = src.transpose(0, 1), tgt.transpose(0, 1)
    out = model(src, tgt)
    est = paramcalc.estimate(model, input_shape=[(10, 32), (7, 32)], batch_size=3)
    assert est.params == sum(p.numel() for p in model.parameters())
    assert est.output_shape == (3, 7, 32) and tuple(out.shape) == ((3, 7, 32) if batch_first else (7, 3, 32))
    assert est.flops > 0
    assert any("batch first" in n for n in est.notes) != batch_first


class WithOptions(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)
        self.mask_proj = nn.Linear(8, 4)

    def forward(self, x, mask=None, scale=2):
        y = self.fc(x)
        if mask is not None:
            y = y + self.mask_proj(mask)
        return y * scale


def test_arguments_with_defaults_take_them_as_a_plain_call_does():
    model = WithOptions()
    est = paramcalc.estimate(model, input_shape=(8,), batch_size=2)
    assert est.output_shape == tuple(model.to("meta")(torch.empty(2, 8, device="meta")).shape)
    assert [row.kind for row in est.layers if row.kind != "parameter"] == ["dense", "scalar_op"]
    assert est.params == sum(p.numel() for p in model.parameters())  # mask_proj counted, and named
    assert any("(mask_proj)" in note for note in est.notes)


class NamedLikeItsInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Linear(8, 4)

    def forward(self, image):
        return self.image(image)


def test_a_module_named_like_an_input_keeps_both():
    check(NamedLikeItsInput(), (8,))


class FunctionalNorms(nn.BatchNorm2d):
    """timm's BatchNormAct2d: a BatchNorm2d subclass whose forward calls F.batch_norm with its own terms."""

    def __init__(self):
        super().__init__(8)
        self.groups = nn.GroupNorm(2, 8)

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps)
        x = F.group_norm(x, 2, self.groups.weight, self.groups.bias)
        q, k = x.flatten(2).reshape(x.shape[0], 2, 4, -1).permute(1, 0, 2, 3).unbind(0)
        return F.rms_norm(q + k, (20,))


def test_functional_norms_and_unbind_count_the_terms_they_read():
    est = check(nn.Sequential(nn.Conv2d(3, 8, 1), FunctionalNorms()), (3, 4, 5))
    assert est.buffers == sum(b.numel() for b in FunctionalNorms().buffers())


class HeadsBySizeTuple(nn.Module):
    """Attention heads as Hugging Face's PVT-v2 splits them: ``x.size()[:-1] + (heads, width)``, a tuple of
    sizes read in the graph joined with one written in the code."""

    def __init__(self):
        super().__init__()
        self.query = nn.Linear(32, 32)

    def forward(self, x):
        q = self.query(x)
        return q.view(q.size()[:-1] + (4, 8)).permute(0, 2, 1, 3)


def test_a_size_tuple_joined_with_a_literal_tuple_is_a_shape():
    est = check(HeadsBySizeTuple(), (16, 32))
    assert not any("running its forward" in n for n in est.notes)  # torch.fx read it
    symbolic = paramcalc.estimate(HeadsBySizeTuple(), input_shape=("n", 32))
    assert symbolic.format_shape(symbolic.output_shape) == "(None, 4, n, 8)"


class Swapped(nn.Module):
    """transpose's aliases, by position and by keyword (MaxViT swaps axes with torch.swapaxes)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        y = torch.swapaxes(self.proj(x), 1, 2)
        return torch.swapdims(y.swapaxes(1, 2), dim0=-1, dim1=1).transpose(dim0=1, dim1=2)


def test_transpose_aliases_are_traced():
    est = check(Swapped(), (5, 8))
    assert not any("running its forward" in n for n in est.notes)  # torch.fx read it
    symbolic = paramcalc.estimate(Swapped(), input_shape=("n", 8))
    assert symbolic.format_shape(symbolic.output_shape) == "(None, n, 8)"
