"""The scenario model: traffic, versions, changes, incidents and outages on a virtual clock."""

from __future__ import annotations

import itertools
import math
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic.alias_generators import to_camel
from scipy import stats

from canaryd.errors import InputError, Problem, ScenarioError
from canaryd.policy.loader import compose_documents, load_model, problem_at, read_document
from canaryd.policy.model import Duration, at
from canaryd.simulation.vllm import REQUEST_LATENCY_MS

ISTIO_BUCKETS_MS: tuple[float, ...] = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)
"""Istio's default ``istio_request_duration_milliseconds`` boundaries."""
KNATIVE_BUCKETS_MS: tuple[float, ...] = (
    5,
    10,
    20,
    40,
    60,
    80,
    100,
    150,
    200,
    250,
    300,
    350,
    400,
    450,
    500,
    600,
    700,
    800,
    900,
    1000,
    2000,
    5000,
    10000,
    20000,
    50000,
    100000,
)
"""Knative queue-proxy ``revision_app_request_latencies`` boundaries."""


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        allow_inf_nan=False,  # .inf and .nan are valid YAML; no scenario value means either
    )


MAX_LATENCY_MS = 3_600_000.0
"""Largest latency parameter a scenario may give (1 h, Istio's largest finite bucket)."""
MAX_RPS = 1_000_000.0
"""Largest request rate a scenario may give (a million requests per second)."""


class LogNormal(_Model):
    median_ms: float = Field(gt=0, le=MAX_LATENCY_MS)
    sigma: float = Field(gt=0, le=5)


class Gamma(_Model):
    shape: float = Field(gt=0, le=10_000)
    scale_ms: float | None = Field(None, gt=0, le=MAX_LATENCY_MS)
    mean_ms: float | None = Field(None, gt=0, le=MAX_LATENCY_MS)

    @model_validator(mode="after")
    def _one(self) -> Gamma:
        if (self.scale_ms is None) == (self.mean_ms is None):
            raise at("scaleMs", "give exactly one of scaleMs and meanMs")
        return self


class Pareto(_Model):
    """Heavy-tailed: P(L > x) = (scaleMs / x) ** shape for x >= scaleMs."""

    scale_ms: float = Field(gt=0, le=MAX_LATENCY_MS)
    shape: float = Field(gt=0, le=100)


class Latency(_Model):
    lognormal: LogNormal | None = None
    gamma: Gamma | None = None
    pareto: Pareto | None = None
    empirical_csv: str | None = Field(None, description="One latency_ms per line.")

    @model_validator(mode="after")
    def _one(self) -> Latency:
        given = [k for k in ("lognormal", "gamma", "pareto", "empirical_csv") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                f"expected exactly one of lognormal, gamma, pareto, empiricalCsv, got {len(given)}"
            )
        return self

    def ppf(self, q: npt.NDArray[np.float64], base: Path) -> npt.NDArray[np.float64]:
        """The latency (ms) at each probability ``q`` in (0, 1): draws by inversion."""
        if self.lognormal is not None:
            ln = self.lognormal
            return np.asarray(stats.lognorm(s=ln.sigma, scale=ln.median_ms).ppf(q))
        if self.gamma is not None:
            g = self.gamma
            scale = g.scale_ms if g.scale_ms is not None else (g.mean_ms or 0.0) / g.shape
            return np.asarray(stats.gamma(a=g.shape, scale=scale).ppf(q))
        if self.pareto is not None:
            p = self.pareto
            return np.asarray(stats.pareto(b=p.shape, scale=p.scale_ms).ppf(q))
        assert self.empirical_csv is not None
        return np.quantile(_read_latencies(base / self.empirical_csv), q)

    def cdf(self, bounds_ms: npt.NDArray[np.float64], base: Path) -> npt.NDArray[np.float64]:
        """P(latency <= b) at each finite boundary."""
        if self.lognormal is not None:
            ln = self.lognormal
            return np.asarray(stats.lognorm(s=ln.sigma, scale=ln.median_ms).cdf(bounds_ms))
        if self.gamma is not None:
            g = self.gamma
            scale = g.scale_ms if g.scale_ms is not None else (g.mean_ms or 0.0) / g.shape
            return np.asarray(stats.gamma(a=g.shape, scale=scale).cdf(bounds_ms))
        if self.pareto is not None:
            p = self.pareto
            return np.asarray(stats.pareto(b=p.shape, scale=p.scale_ms).cdf(bounds_ms))
        assert self.empirical_csv is not None
        samples = _read_latencies(base / self.empirical_csv)
        return np.searchsorted(samples, bounds_ms, side="right") / samples.size


def _read_latencies(path: Path) -> npt.NDArray[np.float64]:
    values: list[float] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            [Problem(str(path), None, None, "", f"not UTF-8 text ({exc.reason})")]
        ) from None
    except OSError as exc:
        raise ScenarioError(
            [Problem(str(path), None, None, "", exc.strerror or str(exc))]
        ) from None
    for i, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#") or (i == 1 and text == "latency_ms"):
            continue
        try:
            v = float(text)
        except ValueError:
            raise ScenarioError(
                [Problem(str(path), i, 1, "", f"expected a latency in ms, got {text!r}")]
            ) from None
        if not math.isfinite(v) or v < 0:
            raise ScenarioError(
                [Problem(str(path), i, 1, "", f"expected a non-negative latency, got {text!r}")]
            )
        values.append(v)
    if not values:
        raise ScenarioError([Problem(str(path), None, None, "", "no latencies in the file")])
    return np.sort(np.asarray(values))


Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class TokenLogNormal(_Model):
    median: float = Field(gt=0, le=1_000_000, description="Median tokens.")
    sigma: float = Field(gt=0, le=5)


class Tokens(_Model):
    """Tokens per request (at least 1): ``ceil`` of a lognormal."""

    lognormal: TokenLogNormal


class Llm(_Model):
    """An LLM served by vLLM: what its histograms and finish reasons are made of.

    End-to-end latency is derived per request as ``ttft + (answer tokens - 1) x timePerToken``,
    so a longer answer is slower end to end at the same speed per token. Answers reaching
    ``maxTokens`` are cut there and finish with ``length``; ``abortRate`` of the others are
    aborted by the client; the version's ``errorRate`` finish with ``error``; the rest ``stop``.
    A canary's ``llm`` (and a change's) replaces only the fields it gives.
    """

    prompt_tokens: Tokens | None = None
    output_tokens: Tokens | None = Field(None, description="Answer tokens before the cut.")
    ttft: Latency | None = Field(None, description="Time to first token.")
    time_per_token: Latency | None = Field(
        None, description="A request's mean time per output token."
    )
    max_tokens: int | None = Field(None, ge=1, description="The requests' max_tokens.")
    max_model_len: int | None = Field(
        None, ge=2, description="vLLM's max_model_len: the token histograms' last bucket."
    )
    abort_rate: Rate | None = None

    def merged(self, other: Llm | None) -> Llm:
        """These fields, replaced by those ``other`` gives."""
        if other is None:
            return self
        given = {k: v for k, v in other if v is not None}
        return self.model_copy(update=given)


Shares = dict[str, Annotated[float, Field(ge=0.0, le=1.0)]]


class Labels(_Model):
    """When ground truth arrives for a prediction."""

    delay: Duration = Field(0.0, description="Mean delay (exponential) until a label arrives.")
    share: Rate = Field(1.0, description="Share of predictions that are ever labelled.")


class CustomValue(_Model):
    """A ``custom`` metric's value per analysis interval: normal, ``mean`` ± ``sd``.

    A custom metric is one number per interval from the user's own PromQL (GPU memory, a
    business KPI, a score); the simulator draws it independently each interval.
    """

    mean: float = Field(ge=-1e12, le=1e12, description="Mean of the per-interval value.")
    sd: float = Field(0.0, ge=0, le=1e12, description="Standard deviation between intervals.")


class Version(_Model):
    error_rate: Rate | None = None
    latency: Latency | None = None
    custom: dict[str, CustomValue] | None = Field(
        None,
        description="Per-interval values of the policy's custom metrics, by metric name "
        "(e.g. {gpu-memory: {mean: 0.62, sd: 0.03}}).",
    )
    llm: Llm | None = None
    categories: dict[str, Shares] | None = Field(
        None,
        description="Category shares by the policy's categorical metric name "
        "(e.g. {predicted-class: {legit: 0.97, fraud: 0.03}}); each must sum to 1.",
    )
    accuracy: Rate | None = Field(None, description="Share of predictions that are right.")


class Change(_Model):
    at: Duration
    error_rate: Rate | None = None
    latency: Latency | None = None
    custom: dict[str, CustomValue] | None = Field(
        None, description="Custom metrics' new values from ``at`` on, by metric name."
    )
    ramp: Duration | None = Field(
        None, description="Reach the new error rate linearly over this long (slow creep)."
    )
    llm: Llm | None = None
    categories: dict[str, Shares] | None = None
    accuracy: Rate | None = None


class Canary(Version):
    changes: list[Change] = Field(default_factory=list)


class Incident(_Model):
    at: Duration
    for_: Duration = Field(alias="for")
    error_rate: Rate | None = None
    latency_factor: float = Field(
        1.0, gt=0, le=1000, description="Multiplies both versions' latency."
    )


class Outage(_Model):
    at: Duration
    for_: Duration = Field(alias="for")


class Diurnal(_Model):
    amplitude: float = Field(ge=0, lt=1)
    period: Duration = 86400.0
    phase: Duration = 0.0


class Traffic(_Model):
    rps: float | None = Field(None, gt=0, le=MAX_RPS, description="Requests per second.")
    diurnal: Diurnal | None = None
    csv: str | None = Field(None, description="Columns t_seconds,rps; linear interpolation.")

    @model_validator(mode="after")
    def _one(self) -> Traffic:
        if (self.rps is None) == (self.csv is None):
            raise at("rps", "give exactly one of rps and csv")
        if self.csv is not None and self.diurnal is not None:
            raise at("diurnal", "diurnal applies to rps, not to a csv trace")
        return self


MAX_SIMULATED_PODS = 32
"""Replicas per version the simulator models (the judges remember as many, ``stats.pods``)."""


class Pods(_Model):
    """Each version runs on its own replicas (pods), which differ even on the same version.

    Per run, each pod draws (from the run's seed) an error-rate multiplier, log-uniform within
    ``x1/errorRateSpread .. x errorRateSpread``, and a latency scale factor, lognormal with mean 1
    and coefficient of variation ``latencyCv`` (the pod's latencies are the version's times it).
    Canary pods are drawn apart from stable pods, from the same spread. A version's requests are
    split evenly (multinomially) across its pods. Observations then carry per-pod counts
    (``VersionCounts.pods``). Realistic values: ``latencyCv`` 0.05-0.3 (same hardware vs mixed
    nodes or GPUs), ``errorRateSpread`` 1-2. Without ``pods`` a version is one exchangeable pool
    of requests and no per-pod counts are reported.
    """

    stable: int = Field(3, ge=1, le=MAX_SIMULATED_PODS, description="Stable replicas.")
    canary: int = Field(1, ge=1, le=MAX_SIMULATED_PODS, description="Canary replicas.")
    latency_cv: float = Field(
        0.0, ge=0.0, le=1.0, description="Coefficient of variation of the pods' latency scale."
    )
    error_rate_spread: float = Field(
        1.0, ge=1.0, le=10.0, description="Pods' error rates vary log-uniformly within x1/s..x s."
    )


class _Origin:
    """Where a scenario was read from (its file and YAML node; none when built in code), so a
    problem found after loading can name its line and column. Not part of what the scenario
    is: any two compare equal, and copies share it."""

    __slots__ = ("file", "node")

    def __init__(self, file: str = "scenario", node: yaml.Node | None = None) -> None:
        self.file = file
        self.node = node

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Origin)

    def __hash__(self) -> int:
        return 0

    def __deepcopy__(self, memo: dict[int, Any]) -> _Origin:
        return self


class Scenario(_Model):
    _origin: _Origin = PrivateAttr(default_factory=_Origin)

    name: str | None = None
    description: str | None = None
    duration: Duration
    tick: Duration = 10.0
    start: datetime = Field(
        datetime.fromisoformat("2026-01-05T10:00:00+00:00"),
        description="Wall time of t=0 (rollout windows are read against it).",
    )
    traffic: Traffic
    buckets: Literal["istio", "knative", "vllm"] | list[Annotated[float, Field(gt=0)]] = "istio"
    stable: Version
    canary: Canary = Field(default_factory=Canary)
    incidents: list[Incident] = Field(default_factory=list)
    metrics_outage: list[Outage] = Field(default_factory=list)
    labels: Labels = Field(default_factory=Labels, description="Label delay (quality metrics).")
    pods: Pods | None = Field(
        None, description="Per-replica random effects; without it no per-pod counts."
    )
    warmup: Duration | None = Field(
        None,
        description="Stable-only traffic before the canary starts, given to the judges as the "
        "daemon gives them the policy's analysis.history (default: that history; 0s: none). "
        "Drawn as one stretch at the scenario's t=0 conditions: its rate, stable's error rate, "
        "latency and pods. LLM signals and custom metrics are not drawn in it.",
    )
    policy: str | None = None
    policy_name: str | None = None
    expect: dict[str, Any] | None = Field(
        None, description="What the scenario library's tests assert (outcome, fraction)."
    )

    @field_validator("buckets")
    @classmethod
    def _increasing(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("expected at least one bucket boundary")
            if any(b <= a for a, b in itertools.pairwise(v)):
                raise ValueError("bucket boundaries must increase")
        return v

    @model_validator(mode="after")
    def _checks(self) -> Scenario:
        if self.stable.error_rate is None:
            raise at("stable.errorRate", "the stable version needs an errorRate")
        if self.stable.llm is None and self.stable.latency is None:
            raise at("stable.latency", "the stable version needs a latency distribution")
        if self.pods is not None and self.stable.llm is not None:
            raise at("pods", "pods are not modelled for llm scenarios (latency is derived there)")
        self._check_ml()
        modelled = set(self.stable.custom or {})
        for path, custom in [
            ("canary.custom", self.canary.custom),
            *(
                (f"canary.changes[{i}].custom", ch.custom)
                for i, ch in enumerate(self.canary.changes)
            ),
        ]:
            unknown = sorted(set(custom or {}) - modelled)
            if unknown:
                raise at(
                    path,
                    f"custom metric(s) {', '.join(unknown)} have no stable value: give "
                    "stable.custom the same names (the canary is compared against stable)",
                )
        if self.tick <= 0 or self.duration < self.tick:
            raise at("tick", "tick must be positive and no longer than duration")
        if self.start.tzinfo is None:
            raise at("start", "start needs a timezone (e.g. 2026-01-05T10:00:00+00:00)")
        return self

    def _check_ml(self) -> None:
        llm = self.stable.llm
        if llm is not None:
            if self.stable.latency is not None:
                raise at(
                    "stable.latency",
                    "with stable.llm, end-to-end latency is derived from ttft, timePerToken "
                    "and outputTokens: remove stable.latency",
                )
            for f in ("prompt_tokens", "output_tokens", "ttft", "time_per_token", "max_tokens"):
                if getattr(llm, f) is None:
                    raise at(f"stable.llm.{to_camel(f)}", "the stable version's llm needs it")
        if self.canary.llm is not None and llm is None:
            raise at("canary.llm", "a canary llm needs stable.llm to start from")
        for i, ch in enumerate(self.canary.changes):
            if ch.llm is not None and llm is None:
                raise at(f"canary.changes[{i}].llm", "an llm change needs stable.llm")
            if ch.latency is not None and llm is not None:
                raise at(
                    f"canary.changes[{i}].latency",
                    "with llm, latency is derived: change llm.ttft or llm.timePerToken instead",
                )
        if self.canary.latency is not None and llm is not None:
            raise at("canary.latency", "with llm, latency is derived: give canary.llm instead")
        for where, cats in self._all_categories():
            for name, shares in cats.items():
                total = sum(shares.values())
                if not shares or abs(total - 1.0) > 1e-6:
                    raise at(f"{where}.{name}", f"shares must sum to 1, got {total:g}")
                if where != "stable.categories" and name not in (self.stable.categories or {}):
                    raise at(f"{where}.{name}", f"stable.categories has no {name!r} to change")
        accs = [self.canary.accuracy, *(c.accuracy for c in self.canary.changes)]
        if any(a is not None for a in accs) and self.stable.accuracy is None:
            raise at("stable.accuracy", "a canary accuracy needs stable.accuracy to compare with")

    def _all_categories(self) -> list[tuple[str, dict[str, Shares]]]:
        out = [
            ("stable.categories", self.stable.categories),
            ("canary.categories", self.canary.categories),
        ]
        out += [
            (f"canary.changes[{i}].categories", c.categories)
            for i, c in enumerate(self.canary.changes)
        ]
        return [(w, c) for w, c in out if c is not None]

    def problem(self, path: str, message: str) -> Problem:
        """A problem found with this scenario after loading (against the policy it is run
        with), at the field ``path`` (``pods``, ``stable.llm``) of the file it was read from,
        or its nearest ancestor's; in "scenario", unlocated, for a scenario built in code."""
        o = self._origin
        if o.node is None:
            return Problem(o.file, None, None, path, message)
        return problem_at(o.file, o.node, path, message)

    def bounds_ms(self) -> tuple[float, ...]:
        if self.buckets == "istio":
            finite: tuple[float, ...] = ISTIO_BUCKETS_MS
        elif self.buckets == "knative":
            finite = KNATIVE_BUCKETS_MS
        elif self.buckets == "vllm":
            finite = REQUEST_LATENCY_MS
        else:
            finite = tuple(float(b) for b in self.buckets)
        return (*finite, math.inf)


SCENARIO_README = "simulations/README.md"
"""Where a scenario's fields are described (an unknown field's error points there)."""


def load_scenario(path: str | Path) -> tuple[Scenario, Path]:
    """The scenario in ``path`` and the directory its relative paths are read from."""
    p = Path(path)
    try:
        text = read_document(p)
        nodes = compose_documents(text, str(p))
        if len(nodes) != 1:
            raise ScenarioError(
                [
                    Problem(
                        str(p), None, None, "", f"expected one scenario document, got {len(nodes)}"
                    )
                ]
            )
        sc = load_model(Scenario, nodes[0], str(p), readme=SCENARIO_README)
        sc._origin = _Origin(str(p), nodes[0])
        return sc, p.parent
    except ScenarioError:
        raise
    except InputError as exc:
        raise ScenarioError(exc.problems) from None


def scenario_json_schema() -> dict[str, Any]:
    schema = Scenario.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "canaryd simulation scenario"
    return schema
