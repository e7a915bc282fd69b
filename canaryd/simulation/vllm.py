"""vLLM's default histogram boundaries, as its exporter writes them (milliseconds and tokens).

From ``vllm/v1/metrics/buckets.py`` of vLLM 0.33.0 (``REQUEST_LATENCY_BUCKETS``,
``TIME_TO_FIRST_TOKEN_BUCKETS``, ``INTER_TOKEN_LATENCY_BUCKETS`` in seconds, and the 1-2-5 series
up to ``max_model_len`` of ``build_1_2_5_buckets`` for token counts). The simulator draws its
LLM histograms over these, so a simulated vLLM looks to the judges as a real one does.
"""

from __future__ import annotations

import math


def _ms(seconds: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(float(f"{1000.0 * s:.12g}") for s in seconds)


REQUEST_LATENCY_MS = _ms(
    (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
     120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
)  # fmt: skip
"""``vllm:e2e_request_latency_seconds``."""
TIME_TO_FIRST_TOKEN_MS = _ms(
    (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
     10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
)  # fmt: skip
"""``vllm:time_to_first_token_seconds``."""
INTER_TOKEN_LATENCY_MS = _ms(
    (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
     10.0, 20.0, 40.0, 80.0)
)  # fmt: skip
"""``vllm:inter_token_latency_seconds`` and ``vllm:request_time_per_output_token_seconds``."""


LLM_LATENCY_BOUNDS_MS: dict[str, tuple[float, ...]] = {
    "ttft": (*TIME_TO_FIRST_TOKEN_MS, math.inf),
    "inter-token": (*INTER_TOKEN_LATENCY_MS, math.inf),
}
"""The buckets (+Inf last) a metric of each LLM latency kind is exported and judged on."""


def request_token_buckets(max_model_len: int) -> tuple[float, ...]:
    """``vllm:request_prompt_tokens`` / ``vllm:request_generation_tokens``: 1, 2, 5, 10, ...
    up to ``max_model_len``."""
    out: list[float] = []
    scale = 1
    while True:
        for m in (1, 2, 5):
            if m * scale > max_model_len:
                return tuple(out)
            out.append(float(m * scale))
        scale *= 10
