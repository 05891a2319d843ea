"""What fits: memory budgets as bytes, and the largest batch (or input size) whose training fits."""

from __future__ import annotations

import re

from paramcalc.core.errors import ParamcalcError

_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value: object) -> int:
    """"8 GiB" -> 8589934592, "80GB" -> 80000000000, an int stays as it is."""
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", value, re.IGNORECASE)
        if match:
            number, unit = match.groups()
            scale = _UNITS[(unit or "b").lower()]
            whole, _, frac = number.partition(".")
            return int(whole) * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)
    raise ParamcalcError(f"a memory size must be bytes (an int) or text like '8 GiB' or '80 GB', received {value!r}",
                         value=value)


def largest_fitting(est, memory: object = None, *, symbol: str | None = None, optimizer: str = "adam",
                    precision: str = "float32", upper: int = 2**40, device: object = None,
                    keras_backend: str | None = None) -> int:
    """The largest value of ``symbol`` (default: the batch size) for which training fits in ``memory``.

    >>> import paramcalc
    >>> est = paramcalc.estimate(paramcalc.seed_model("flat", 20020))
    >>> largest_fitting(est, "80 GiB") > 100000
    True
    >>> reshaped = paramcalc.estimate(paramcalc.seed_model("reshaped_flatten", 20020))
    >>> largest_fitting(reshaped, "24 GiB"), largest_fitting(reshaped, device="h100-sxm") > 128
    (0, True)

    Returns 0 when even 1 does not fit (the weights, gradients and optimizer state alone, say).
    ``device``: simulate memory by that device's rules (a calibrated profile's framework, its measured
    recurrent and Transformer internals); ``memory`` defaults to the device's own. ``keras_backend``:
    for a Keras model, the backend whose training is simulated, as for :func:`paramcalc.training_cost`.
    """
    from paramcalc.cost.training import training_cost

    if memory is None:
        if device is None:
            raise ParamcalcError("largest_fitting needs a memory budget or a device", value=None,
                                 fix='pass memory="24 GiB" (say) or device="h100-sxm"')
        from paramcalc.cost.devices import resolve

        device = resolve(device)
        memory = device.memory_bytes
    budget = parse_bytes(memory)
    name = symbol or est.batch_symbol

    def fits(value: int) -> bool:
        cost = training_cost(est.subs({name: value}), optimizer=optimizer, precision=precision, device=device,
                             keras_backend=keras_backend)
        return cost.memory.peak <= budget

    if not fits(1):
        return 0
    low, high = 1, 2
    while high <= upper and fits(high):
        low, high = high, high * 2
    high = min(high, upper + 1)
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low
