"""A 5-level U-Net (down and up paths, skip concatenations) on a symbolic height and width: compact
formulas, exact against Keras and torch at several concrete sizes, and sizes the skips cannot join are
refused by the assumptions the symbolic estimate recorded."""

from __future__ import annotations

import pytest

import paramcalc
from paramcalc.core.errors import ShapeError

SIZES = [(64, 96), (128, 32), (32, 256)]


def _keras_unet(keras, shape, levels=5, base=4):
    L = keras.layers
    inp = keras.Input(shape)
    x, skips = inp, []
    for i in range(levels):
        x = L.Conv2D(base * 2**i, 3, padding="same", activation="relu")(x)
        x = L.Conv2D(base * 2**i, 3, padding="same", activation="relu")(x)
        skips.append(x)
        x = L.MaxPooling2D(2)(x)
    x = L.Conv2D(base * 2**levels, 3, padding="same", activation="relu")(x)
    for i in reversed(range(levels)):
        x = L.Concatenate()([L.Conv2DTranspose(base * 2**i, 2, strides=2)(x), skips[i]])
        x = L.Conv2D(base * 2**i, 3, padding="same", activation="relu")(x)
    return keras.Model(inp, L.Conv2D(1, 1)(x), name="unet")


def test_keras_unet_on_symbolic_height_and_width():
    keras = pytest.importorskip("keras")
    est = paramcalc.estimate(_keras_unet(keras, (None, None, 3)).get_config(), input_shape=("h", "w", 3))
    assert [str(d) for d in est.output_shape[1:3]] == ["32*(h - 32)//32 + 32", "32*(w - 32)//32 + 32"]
    for h, w in SIZES:
        concrete = _keras_unet(keras, (h, w, 3))
        substituted = est.subs(h=h, w=w, B=2)
        assert substituted.params == concrete.count_params()
        shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in concrete.layers[1:]}
        assert [tuple(r.output_shape[1:]) for r in substituted.layers] == list(shapes.values())
    with pytest.raises(ShapeError, match="assumption"):  # 65 rows cannot come back up to 65
        est.subs(h=65, w=64)


def test_torch_unet_on_symbolic_height_and_width():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class UNet(nn.Module):
        def __init__(self, levels=5, base=4):
            super().__init__()
            self.down, channels = nn.ModuleList(), 3
            for i in range(levels):
                width = base * 2**i
                self.down.append(nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                                               nn.Conv2d(width, width, 3, padding=1), nn.ReLU()))
                channels = width
            self.pool = nn.MaxPool2d(2)
            self.mid = nn.Conv2d(channels, base * 2**levels, 3, padding=1)
            channels = base * 2**levels
            self.up, self.fuse = nn.ModuleList(), nn.ModuleList()
            for i in reversed(range(levels)):
                width = base * 2**i
                self.up.append(nn.ConvTranspose2d(channels, width, 2, stride=2))
                self.fuse.append(nn.Conv2d(2 * width, width, 3, padding=1))
                channels = width
            self.out = nn.Conv2d(channels, 1, 1)

        def forward(self, x):
            skips = []
            for block in self.down:
                x = block(x)
                skips.append(x)
                x = self.pool(x)
            x = self.mid(x)
            for up, fuse, skip in zip(self.up, self.fuse, reversed(skips)):
                x = fuse(torch.cat([up(x), skip], dim=1))
            return self.out(x)

    with torch.device("meta"):
        model = UNet()
    est = paramcalc.estimate(model, input_shape=(3, "h", "w"))
    assert est.params == sum(p.numel() for p in model.parameters())
    for h, w in SIZES:
        seen: dict = {}  # module name -> the output shape of each of its calls (the pool is called five times)

        def record(module, inputs, output, name):
            seen.setdefault(name, []).append(tuple(output.shape[1:]))
        hooks = [module.register_forward_hook(lambda m, i, o, name=name: record(m, i, o, name))
                 for name, module in model.named_modules() if not list(module.children())]
        model(torch.empty(2, 3, h, w, device="meta"))
        for hook in hooks:
            hook.remove()
        calls: dict = {}
        for row in est.subs(h=h, w=w).layers:  # a module's later calls share its weights: pool_1 ... pool_4
            if row.kind != "concatenate":
                calls.setdefault(row.shared_with or row.name, []).append(tuple(row.output_shape[1:]))
        assert calls == seen
