"""Numbers as messages show them: pixel counts in megapixels, memory in binary units.

Both keep three significant digits where a rounding to whole units would say 0."""

from __future__ import annotations

import math


def megapixels(width: int, height: int) -> str:
    """``"0.188 MP"`` for 500x375, ``"179 MP"`` for 14000x12800: never a bare 0."""
    mp = width * height / 1e6
    if mp < 0.001:
        return f"{width * height:,} pixel{'s' if width * height != 1 else ''}"
    return f"{mp:.0f} MP" if mp >= 100 else f"{mp:.3g} MP"


def memory(n: float, at_least: bool = False) -> str:
    """``"6.25 KiB"``, ``"1.5 GiB"``, ``"512 bytes"``: the units --max-memory takes (K = 1024).
    ``at_least``: rounded up, so that the amount shown is enough."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            value = n / scale
            decimals = 0 if value >= 100 else 1 if value >= 10 else 2
            if at_least:
                value = math.ceil(value * 10**decimals - 1e-9) / 10**decimals
            text = f"{value:.{decimals}f}"
            return (text.rstrip("0").rstrip(".") if decimals else text) + f" {unit}"
    return f"{math.ceil(n) if at_least else round(n)} bytes"
