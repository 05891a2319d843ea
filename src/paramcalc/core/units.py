"""How figures read to people: bytes in binary units, seconds in the unit that shows them, and the FLOP
convention every count follows. Display only: the exact ints stay on the Estimate."""

from __future__ import annotations

FLOP_CONVENTION = "1 multiply-add = 2 FLOPs; MACs count multiply-adds; per sample unless 'per batch'"
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_bytes(value) -> str:
    """1,801,831,101 * 4 bytes -> '6.71 GiB' (display only; the exact int stays on the Estimate)."""
    if type(value) is not int:  # a formula: "B" would read as the batch symbol
        return f"({value}) bytes"
    size, unit = value, 0
    while size >= 1024 ** (unit + 1) and unit < len(_BINARY_UNITS) - 1:
        unit += 1
    if unit == 0:
        return f"{value} B"
    hundredths = value * 100 // 1024 ** unit
    return f"{hundredths // 100:,}.{hundredths % 100:02d} {_BINARY_UNITS[unit]}"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"
