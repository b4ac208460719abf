"""Numbers as messages show them: pixel counts in megapixels, memory in binary units.

Both keep three significant digits where a rounding to whole units would say 0."""

from __future__ import annotations


def megapixels(width: int, height: int) -> str:
    """``"0.188 MP"`` for 500x375, ``"179 MP"`` for 14000x12800: never a bare 0."""
    mp = width * height / 1e6
    return f"{mp:.0f} MP" if mp >= 100 else f"{mp:.3g} MP"


def memory(n: float) -> str:
    """``"6.25 KiB"``, ``"1.5 GiB"``, ``"512 bytes"``: the units --max-memory takes (K = 1024)."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
    return f"{n:.0f} bytes"
