"""Real architectures, exact against the frameworks: Keras applications read from their config, and
torch networks written with nn modules, traced with torch.fx."""

from __future__ import annotations

import pytest

import paramcalc
from paramcalc import estimate

from .properties.oracle import compare_keras


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


@pytest.mark.parametrize("name", ["ResNet50", "MobileNetV2"])
def test_keras_applications_from_config(keras, name):
    model = getattr(keras.applications, name)(weights=None)
    est = estimate(model.get_config())
    compare_keras(model, est)
    assert est.output_shape[1:] == (1000,)


def test_resnet50_symbolic_input_matches_concrete(keras):
    config = keras.applications.ResNet50(weights=None).get_config()
    symbolic = estimate(config, input_shape=("h", "w", 3))
    concrete = estimate(config)
    assert symbolic.params == concrete.params  # global pooling: params do not depend on h, w
    assert symbolic.subs(h=224, w=224).flops == concrete.flops
    assert symbolic.subs(h=224, w=224).layers[-2].output_shape == concrete.layers[-2].output_shape


torch = pytest.importorskip("torch")
nn = torch.nn


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.down is None else self.down(x)
        return self.relu(out + shortcut)


class SmallResNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.layer1 = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 16, 1))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class TransformerClassifier(nn.Module):
    def __init__(self, vocab=1000, d_model=64, heads=4, layers=2, steps=32, classes=5):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.position = nn.Parameter(torch.zeros(1, steps, d_model))
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=128, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, classes)

    def forward(self, tokens):
        x = self.embed(tokens) + self.position
        x = self.norm(self.encoder(x))
        return self.head(x.mean(dim=1))


def _module_outputs(model, x):
    shapes = {}
    names = {m: n for n, m in model.named_modules()}

    def hook(module, inputs, output):
        shapes[names[module]] = tuple(output.shape) if isinstance(output, torch.Tensor) else None

    handles = [m.register_forward_hook(hook) for n, m in model.named_modules() if n]
    out = model(x)
    for h in handles:
        h.remove()
    return out, shapes


@pytest.mark.parametrize("make,shape,dtype", [
    (SmallResNet, (3, 64, 64), torch.float32),
    (TransformerClassifier, (32,), torch.long),
])
def test_torch_networks_traced(make, shape, dtype):
    model = make().to("meta")
    out, shapes = _module_outputs(model, torch.empty((4,) + shape, device="meta", dtype=dtype))
    est = estimate(model, input_shape=shape, batch_size=4)
    assert est.output_shape == tuple(out.shape)
    assert est.params == sum(p.numel() for p in model.parameters())
    assert est.buffers == sum(b.numel() for b in model.buffers())
    rows = {r.name: r for r in est.layers}
    checked = 0
    for name, row in rows.items():
        if name in shapes and shapes[name] is not None:
            assert row.output_shape == shapes[name], name
            checked += 1
    assert checked >= 4  # every module paramcalc kept whole (the classifier has 4, the ResNet 30)


def test_every_kind_is_exercised_by_a_property_test():
    """A new layer kind needs a property test against a framework: this list says which covers each."""
    covered = {
        # test_keras_properties / test_torch_properties (random stacks)
        "dense", "flatten", "reshape", "unflatten", "permute", "activation", "dropout", "identity",
        # test_keras_layers / test_torch_layers (per family)
        "conv", "conv_transpose", "depthwise_conv", "separable_conv", "pool", "global_pool", "adaptive_pool",
        "batch_norm", "layer_norm", "group_norm", "rms_norm", "normalization", "embedding", "rnn",
        "attention", "transformer", "pad", "crop", "upsample", "pixel_shuffle", "repeat_vector", "rescale",
        "time_distributed",
        "merge", "concatenate", "dot", "prelu", "glu",
        # test_coverage_keras_applications (ConvNeXt, InceptionResNetV2, from config and live)
        "layer_scale", "scaled_sum",
        # test_torch_layers.test_random_traced_modules (fx functions and methods)
        "view", "transpose", "unsqueeze", "squeeze", "index", "reduce", "matmul", "scalar_op", "size",
        "value_op", "expand", "parameter", "split", "check", "channel_affine",
        # test_torch_layers.test_random_modules_read_by_running_them (ATen operations of a forward)
        "captured",
        # test_keras_properties.test_random_stacks_with_classes_without_a_rule_match_keras (live models)
        "foreign",
        # test_files.py: a Keras Lambda is never run, so no framework can be its oracle
        "opaque",
        # test_keras_frontend: every Keras preprocessing and augmentation class in both data formats, and
        # EinsumDense in each equation form against a real call and torch's FlopCounterMode
        "augment", "einsum_dense",
        # test_keras_frontend: Keras Attention and AdditiveAttention, each score mode, against a real call
        "score_attention",
        # test_keras_frontend: ConvLSTM1D/2D/3D, both data formats, against real calls and torch's
        # FlopCounterMode count of the same convolutions
        "conv_lstm",
        # test_keras_frontend: ReversibleEmbedding's two calls, tied and untied, live and from a config
        "reversible_embedding",
        # test_keras_expansion: Keras operations against Keras' shapes, einsum against FlopCounterMode
        "einsum", "repeat", "dot_product_attention",
        # test_coverage_keras_hub: KerasHub's position and rotary embeddings in their backbones
        "position_embedding", "rotary_embedding",
    }
    builtin = {k for k, cls in paramcalc.layer_kinds().items() if cls.__module__.startswith("paramcalc.layers.")}
    assert builtin == covered
