"""JSON for floats that JSON cannot spell: ``NaN``, ``+Inf`` and ``-Inf`` as strings.

canaryd persists evidence (rollout state, verdicts, histogram layouts) as JSON, and a round trip
must be exact: a restored rollout makes bit-identical decisions. JSON has no non-finite numbers,
so they are written as the strings Prometheus uses for them (``"NaN"``, ``"+Inf"``, ``"-Inf"``)
and read back from those spellings (plus the common ``"inf"``/``"Infinity"`` variants).
Finite floats pass through untouched (Python's ``json`` writes them with ``repr``, which is exact).

Long float vectors (a judge's log-likelihood grid) are packed as their IEEE-754 little-endian
bytes in base64, ``{"f64": "<base64>"}``: exact, a third the size of decimal text, and a
fraction of a Python float list's memory (the daemon keeps every rollout's evidence live).

This is the only place these encodings are written.
"""

from __future__ import annotations

import base64
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

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


def pack_f64(values: Any) -> dict[str, str]:
    """``values`` (a float array or sequence) as ``{"f64": <base64 of little-endian float64>}``."""
    import numpy as np

    raw = np.ascontiguousarray(values, dtype="<f8").tobytes()
    return {"f64": base64.b64encode(raw).decode("ascii")}


def is_packed_f64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("f64"), str)


def unpack_f64(value: Any) -> npt.NDArray[np.float64]:
    """The float64 array of ``value``: a ``pack_f64`` result or a plain list of numbers.

    Raises ValueError for anything else (bad base64, a length that is not whole floats).
    """
    import numpy as np

    if is_packed_f64(value):
        try:
            raw = base64.b64decode(value["f64"], validate=True)
        except ValueError as exc:
            raise ValueError(f"bad packed vector: {exc}") from None
        if len(raw) % 8:
            raise ValueError("bad packed vector: length is not a multiple of 8")
        return np.frombuffer(raw, dtype="<f8").astype(np.float64)
    return np.asarray(value, dtype=np.float64)
