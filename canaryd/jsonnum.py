"""JSON for floats that JSON cannot spell: ``NaN``, ``+Inf`` and ``-Inf`` as strings.

canaryd persists evidence (rollout state, verdicts, histogram layouts) as JSON, and a round trip
must be exact: a restored rollout makes bit-identical decisions. JSON has no non-finite numbers,
so they are written as the strings Prometheus uses for them (``"NaN"``, ``"+Inf"``, ``"-Inf"``)
and read back from those spellings (plus the common ``"inf"``/``"Infinity"`` variants).
Finite floats pass through untouched (Python's ``json`` writes them with ``repr``, which is exact).

This is the only place that encoding is written.
"""

from __future__ import annotations

import math
from typing import Any

JsonFloat = float | str

_DECODE: dict[str, float] = {
    "NaN": math.nan,
    "nan": math.nan,
    "+Inf": math.inf,
    "Inf": math.inf,
    "inf": math.inf,
    "+inf": math.inf,
    "Infinity": math.inf,
    "-Inf": -math.inf,
    "-inf": -math.inf,
    "-Infinity": -math.inf,
}


def encode_float(x: float) -> JsonFloat:
    """``x`` as a JSON-safe value: itself when finite, else ``"NaN"``/``"+Inf"``/``"-Inf"``."""
    if math.isfinite(x):
        return x
    if math.isnan(x):
        return "NaN"
    return "+Inf" if x > 0 else "-Inf"


def encode_optional(x: float | None) -> JsonFloat | None:
    return None if x is None else encode_float(x)


def decode_float(x: JsonFloat | int) -> float:
    """The float that ``encode_float`` wrote (raises ``ValueError`` for anything else)."""
    if isinstance(x, str):
        try:
            return _DECODE[x]
        except KeyError:
            return float(x)  # a number written as text; raises ValueError otherwise
    if isinstance(x, bool):
        raise ValueError(f"expected a number, got {x!r}")
    return float(x)


def decode_optional(x: JsonFloat | int | None) -> float | None:
    return None if x is None else decode_float(x)


def encode_tree(x: Any) -> Any:
    """Every float at any depth of dicts, lists and tuples encoded (tuples become lists)."""
    if isinstance(x, dict):
        return {k: encode_tree(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [encode_tree(v) for v in x]
    if isinstance(x, float):
        return encode_float(x)
    return x
