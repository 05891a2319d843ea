"""The training zoo: models that benchmarks train for real and that paramcalc predicts.

Each entry names a builder and its arguments, so a measurement stored as JSON can be matched later
with the same model rebuilt on the meta device for a prediction. torch only (imported lazily).

    python -c "import zoo; print([c['name'] for c in zoo.configs('gpu')])"
"""

from __future__ import annotations

import os


def _nn():
    import torch

    return torch, torch.nn


def seed(variant: str, features: int):
    """The seed models (see ../shared/reference/seed-case.md) in torch: ReLU MLP 300-300-100-1."""
    torch, nn = _nn()
    if variant == "flat":
        return nn.Sequential(nn.Linear(features, 300), nn.ReLU(), nn.Linear(300, 300), nn.ReLU(),
                             nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 1))
    head = [nn.Linear(1, 300), nn.ReLU()]
    if variant == "reshaped_flatten":
        return nn.Sequential(*head, nn.Flatten(), nn.Linear(300 * features, 300), nn.ReLU(),
                             nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 1))
    return nn.Sequential(*head, nn.Linear(300, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                         nn.Linear(100, 1))


def mlp(features: int, width: int, depth: int, outputs: int = 10):
    torch, nn = _nn()
    layers, d = [], features
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, outputs))


def cnn(channels: int = 32, classes: int = 10):
    """A small VGG-style CNN: conv-BN-ReLU blocks with pooling, then a linear head."""
    torch, nn = _nn()
    c = channels
    return nn.Sequential(
        nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
        nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(),
        nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * c, 4 * c, 3, padding=1), nn.BatchNorm2d(4 * c), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * c, classes))


def lstm(features: int, hidden: int, layers: int):
    torch, nn = _nn()

    class _LSTMRegressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
            self.head = nn.Linear(hidden, 1)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[:, -1])

    return _LSTMRegressor()


def transformer(vocab: int, d_model: int, heads: int, ff: int, layers: int, steps: int, classes: int = 10):
    torch, nn = _nn()

    class _Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, d_model)
            self.position = nn.Parameter(torch.zeros(1, steps, d_model))
            layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=ff, batch_first=True,
                                               dropout=0.1)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = nn.Linear(d_model, classes)

        def forward(self, tokens):
            return self.head(self.encoder(self.embed(tokens) + self.position).mean(dim=1))

    return _Encoder()


def _real_models_importable():
    """torchvision (and timm, transformers, which import it) beside the CPU build of torch: the test
    fixture declares the two operators its compiled library would (tests/torchvision_zoo.py says why)."""
    import sys

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.torchvision_zoo import load

    load()


def resnet18(classes: int = 10):
    """torchvision's ResNet-18, as torchvision builds it."""
    _real_models_importable()
    import torchvision

    return torchvision.models.resnet18(num_classes=classes)


def timm_vit(image: int, patch: int, depth: int, classes: int = 10):
    """timm's ViT-Tiny (192 wide, 3 heads) at a small image size and depth."""
    _real_models_importable()
    import timm

    return timm.create_model("vit_tiny_patch16_224", img_size=image, patch_size=patch, depth=depth,
                             num_classes=classes)


def gpt2(layers: int, width: int, heads: int, vocab: int, steps: int):
    """A Hugging Face GPT-2 language model from its config; forward returns the logits (a training loop's
    view of the model's output)."""
    torch, nn = _nn()
    _real_models_importable()
    import transformers

    transformers.logging.set_verbosity_error()
    # use_cache stays on (the default): with it off, transformers looks for packed sequences in the
    # position ids, a value-dependent branch no meta tensor can answer
    config = transformers.GPT2Config(n_layer=layers, n_embd=width, n_head=heads, vocab_size=vocab, n_positions=steps)

    class _GPT2Logits(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = transformers.GPT2LMHeadModel(config)

        def forward(self, input_ids):
            return self.model(input_ids=input_ids).logits

    return _GPT2Logits()


BUILDERS = {"seed": seed, "mlp": mlp, "cnn": cnn, "lstm": lstm, "transformer": transformer, "resnet18": resnet18,
            "timm_vit": timm_vit, "gpt2": gpt2}


def config(name: str, builder: str, args: dict, input_shape: tuple, batch: int, task: str,
           input_dtype: str = "float32", classes: int = 10) -> dict:
    return {"name": name, "builder": builder, "args": args, "input_shape": list(input_shape), "batch": batch,
            "task": task, "input_dtype": input_dtype, "classes": classes}


def configs(where: str = "cpu") -> list[dict]:
    """The zoo. ``where="gpu"`` uses the full sizes; "cpu" scales them to a 2-core machine."""
    gpu = where == "gpu"
    out = []
    seed_features = [20020, 2000] if gpu else [2000, 500]
    for f in seed_features:
        out.append(config(f"seed_flat_{f}", "seed", {"variant": "flat", "features": f}, (f,), 128, "regression"))
        out.append(config(f"seed_reshaped_flatten_{f}", "seed", {"variant": "reshaped_flatten", "features": f},
                          (f, 1), 128, "regression"))
        out.append(config(f"seed_reshaped_{f}", "seed", {"variant": "reshaped", "features": f}, (f, 1), 128,
                          "regression_per_position"))
    widths = [256, 1024, 4096] if gpu else [128, 512, 1024]
    batches = [32, 256, 2048] if gpu else [16, 128, 512]
    for w in widths:
        for b in batches:
            out.append(config(f"mlp_w{w}_b{b}", "mlp", {"features": 1024 if gpu else 256, "width": w, "depth": 4},
                              (1024 if gpu else 256,), b, "classification"))
    for b in ([64, 256] if gpu else [16, 64]):
        size = 64 if gpu else 32
        out.append(config(f"cnn_b{b}", "cnn", {"channels": 32}, (3, size, size), b, "classification"))
    out.append(config("lstm", "lstm", {"features": 128 if gpu else 32, "hidden": 256 if gpu else 64, "layers": 2},
                      (64 if gpu else 32, 128 if gpu else 32), 64 if gpu else 32, "regression"))
    t = dict(vocab=1000, d_model=256 if gpu else 64, heads=8 if gpu else 4, ff=1024 if gpu else 256,
             layers=4 if gpu else 2, steps=128 if gpu else 64)
    out.append(config("transformer", "transformer", t, (t["steps"],), 32 if gpu else 16, "classification",
                      input_dtype="int64"))
    # real models, as their libraries build them
    size = 64
    out.append(config("resnet18_64", "resnet18", {}, (3, size, size), 64 if gpu else 16, "classification"))
    out.append(config("timm_vit_tiny_64", "timm_vit", {"image": size, "patch": 8, "depth": 12 if gpu else 4},
                      (3, size, size), 64 if gpu else 16, "classification"))
    g = dict(layers=2, width=256 if gpu else 128, heads=4, vocab=1000, steps=128 if gpu else 64)
    out.append(config("gpt2_2layer", "gpt2", g, (g["steps"],), 32 if gpu else 8, "language_model",
                      input_dtype="int64"))
    return out


def build(cfg: dict):
    return BUILDERS[cfg["builder"]](**cfg["args"])
