"""The training zoo: models that benchmarks train for real and that paramcalc predicts.

Each entry names a builder and its arguments, so a measurement stored as JSON can be matched later
with the same model rebuilt on the meta device for a prediction. torch only (imported lazily).

    python -c "import zoo; print([c['name'] for c in zoo.configs('gpu')])"
"""

from __future__ import annotations


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


BUILDERS = {"seed": seed, "mlp": mlp, "cnn": cnn, "lstm": lstm, "transformer": transformer}


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
    return out


def build(cfg: dict):
    return BUILDERS[cfg["builder"]](**cfg["args"])
