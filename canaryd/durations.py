"""Durations written as ``30s``, ``5m``, ``2h``, ``1d`` or compound ``1h30m``.

A compound duration names each unit at most once, largest first (``1h30m``, not ``30m1h`` or
``5m5m``): anything else is more likely a typo than a meaning.
"""

from __future__ import annotations

import itertools
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ORDER = ("d", "h", "m", "s", "ms")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")


def parse_duration(text: str | int | float) -> float:
    """Parse a duration into seconds.

    Bare numbers are refused on purpose: ``5`` could mean seconds or minutes, and a policy must
    not leave that to chance.
    """
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(f"expected a duration such as '30s', '5m' or '2h', got {text!r}")
    s = text.strip()
    if not _WHOLE.match(s):
        raise ValueError(f"expected a duration such as '30s', '5m' or '2h', got {text!r}")
    parts = _PART.findall(s)
    ranks = [_ORDER.index(u) for _, u in parts]
    if any(b <= a for a, b in itertools.pairwise(ranks)):
        raise ValueError(
            f"expected each unit at most once, largest first (such as '1h30m'), got {text!r}"
        )
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not seconds < 1e12:
        raise ValueError(f"duration {text!r} is too long")
    return seconds


def format_duration(seconds: float) -> str:
    """Format seconds the way a person writes them (``90`` -> ``1m30s``)."""
    if seconds < 1 and seconds > 0:
        return f"{round(seconds * 1000)}ms"
    rest = round(seconds)
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out or "0s"
