"""Plots of training memory by part and step time, against batch size or a symbolic input size.

matplotlib is an optional extra (``pip install 'paramcalc[plot]'``), imported only here.
"""

from __future__ import annotations

from paramcalc.core.errors import ParamcalcError

PARTS = ("weights", "gradients", "optimizer", "activations", "input_batch")


def sweep(est, values: list[int], symbol: str | None = None, *, optimizer: str = "adam",
          precision: str = "float32", device: object = None, keras_backend: str | None = None,
          loss: str | None = None) -> list[dict]:
    """Training cost at each value of ``symbol`` (default: the batch size), as plain numbers."""
    from paramcalc.cost.training import training_cost

    name = symbol or est.batch_symbol
    rows = []
    for value in values:
        cost = training_cost(est.subs({name: value}), optimizer=optimizer, precision=precision, device=device,
                             keras_backend=keras_backend, loss=loss)
        m = cost.memory
        rows.append({"value": value, **{part: getattr(m, part) for part in PARTS}, "peak": m.peak,
                     "step_seconds": cost.step_seconds})
    return rows


def plot(est, values: list[int], path: str, *, symbol: str | None = None, optimizer: str = "adam",
         precision: str = "float32", device: object = None, keras_backend: str | None = None,
         loss: str | None = None) -> str:
    """Write a PNG: memory by part (stacked) with the device's memory as a line, and step time."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ParamcalcError("plotting needs matplotlib", fix="pip install 'paramcalc[plot]'") from None
    from paramcalc.cost.devices import resolve

    profile = resolve(device) if device is not None else None
    rows = sweep(est, values, symbol, optimizer=optimizer, precision=precision, device=profile, keras_backend=keras_backend,
                 loss=loss)
    xs = [r["value"] for r in rows]
    label = symbol or "batch size"
    panels = 2 if profile is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.2), squeeze=False)
    ax = axes[0][0]
    ax.stackplot(xs, *[[r[p] / 2**30 for r in rows] for p in PARTS], labels=[p.replace("_", " ") for p in PARTS],
                 alpha=0.85)
    ax.plot(xs, [r["peak"] / 2**30 for r in rows], color="black", linewidth=1.2, label="predicted peak")
    if profile is not None:
        ax.axhline(profile.memory_bytes / 2**30, color="red", linestyle="--", label=f"{profile.name} memory")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(label)
    ax.set_ylabel("GiB")
    ax.set_title(f"{est.name}: training memory ({optimizer}, {precision})")
    ax.legend(fontsize=8, loc="upper left")
    if profile is not None:
        ax2 = axes[0][1]
        ax2.plot(xs, [r["step_seconds"] * 1e3 for r in rows], marker="o")
        ax2.set_xscale("log", base=2)
        ax2.set_yscale("log")
        ax2.set_xlabel(label)
        ax2.set_ylabel("ms per step")
        ax2.set_title(f"step time on {profile.name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
