"""The CanaryPolicy model: one document per model, validated strictly.

Unknown fields are errors (a typo never passes silently). Every default is chosen to be safe:
roll back on failure, pause on missing data, promote only after every step.
"""

from __future__ import annotations

import itertools
import re
import warnings
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel, to_snake

from canaryd.durations import format_duration, parse_duration

API_VERSION = "canaryd.io/v1alpha1"
KIND = "CanaryPolicy"

OTHER_CATEGORY = "(other)"
"""The pooled category of a categorical metric: every category it does not test one by one."""
MAX_CATEGORIES = 16
"""Most categories a categorical metric tests one by one; the rest are pooled. Each costs
``log(2K)`` of evidence and two rows of 201 floats of state, which must fit a ConfigMap."""

LOC_MARK = "\x1f"
"""Separates a sub-path from the message in cross-field errors, so the loader can point at the
field that is wrong rather than at the object that holds it."""


def at(path: str, message: str) -> ValueError:
    """A validation error that names the sub-path it is about (``router.istio.stableHost``)."""
    return ValueError(f"{LOC_MARK}{path}{LOC_MARK}{message}")


def _duration(v: Any) -> float:
    return parse_duration(v)


def _duration_text(seconds: float) -> str:
    """Seconds as a duration ``parse_duration`` reads back exactly (``600.0`` -> ``10m``)."""
    if float(seconds).is_integer():
        return format_duration(seconds)
    return f"{seconds * 1000:g}ms"


Duration = Annotated[
    float,
    BeforeValidator(_duration),
    # JSON dumps (the report's embedded policy) write durations as a person does, loadable again.
    PlainSerializer(_duration_text, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$",
            "description": "A duration such as 30s, 5m, 2h or 1h30m.",
        }
    ),
]

Percent = Annotated[int, Field(ge=0, le=100, strict=True)]
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        # .inf and .nan are valid YAML floats; no policy value means either (a weight of .inf
        # once made every tick divide by zero).
        allow_inf_nan=False,
    )


class Metadata(_Model):
    name: str = Field(description="Policy name, unique among the loaded policies.")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Target(_Model):
    namespace: str = Field(description="Namespace of the InferenceService.")
    inference_service: str = Field(description="Name of the InferenceService to roll out.")
    component: Literal["predictor", "transformer", "explainer"] = Field(
        "predictor", description="Which component's revisions are compared."
    )

    @field_validator("namespace", "inference_service")
    @classmethod
    def _dns(cls, v: str) -> str:
        if not _DNS_LABEL.match(v) or len(v) > 63:
            raise ValueError(
                f"expected a DNS-1123 label (lowercase letters, digits, '-'), got {v!r}"
            )
        return v


class IstioRoute(_Model):
    virtual_service: str = Field(description="Name of the user-owned VirtualService to re-weight.")
    stable_host: str = Field(description="Destination host of the stable InferenceService.")
    canary_host: str = Field(description="Destination host of the canary InferenceService.")
    namespace: str | None = Field(None, description="VirtualService namespace (default: target's).")


class BackendRef(_Model):
    """A Service that an HTTPRoute rule's ``backendRefs`` (or a RequestMirror filter) names."""

    name: str = Field(description="Service name, exactly as in the HTTPRoute's backendRefs.")
    port: Annotated[int, Field(ge=1, le=65535, strict=True)] | None = Field(
        None,
        description="Service port; when given, the backendRef must have this port too "
        "(needed when the rule names the same Service twice).",
    )
    namespace: str | None = Field(
        None, description="Service namespace, when the backendRef names one (default: the route's)."
    )


class GatewayApiRoute(_Model):
    http_route: str = Field(description="Name of the user-owned HTTPRoute to re-weight.")
    namespace: str | None = Field(None, description="HTTPRoute namespace (default: target's).")
    rule_name: str | None = Field(
        None, description="The rule (spec.rules[].name, Gateway API >= 1.2) with the weighted pair."
    )
    rule_index: Annotated[int, Field(ge=0, lt=16, strict=True)] | None = Field(
        None, description="The rule's index in spec.rules, when the rules are not named."
    )
    stable_backend: BackendRef = Field(description="The stable Service's backendRef.")
    canary_backend: BackendRef = Field(description="The canary Service's backendRef.")

    @model_validator(mode="after")
    def _rule(self) -> GatewayApiRoute:
        if (self.rule_name is None) == (self.rule_index is None):
            raise at(
                "ruleName",
                "give exactly one of ruleName and ruleIndex: the rule whose two backendRefs "
                "canaryd re-weights (every other rule stays as it is)",
            )
        if self.stable_backend == self.canary_backend:
            raise at("canaryBackend", "stable and canary backends are the same Service")
        return self


ROUTER_SETTINGS = {"istio": "istio", "gateway-api": "gatewayApi"}
"""Router types that need their own settings block, and the block's field name."""

MIRROR_UNSUPPORTED = {
    "kserve": (
        "KServe Serverless cannot mirror traffic: Knative's Route only splits traffic between "
        "revisions by percent and has no mirror. Put an Istio VirtualService (router.type: "
        "istio) or a Gateway API HTTPRoute (router.type: gateway-api) in front of two "
        "InferenceServices to judge the canary on mirrored traffic, or remove steps.shadow"
    ),
    "kserve-raw": (
        "KServe Standard mode's spec.canary[] only splits traffic by percent and has no "
        "mirror. Expose the two InferenceServices through an HTTPRoute (router.type: "
        "gateway-api) or a VirtualService (router.type: istio) to judge the canary on mirrored "
        "traffic, or remove steps.shadow"
    ),
}
"""Routers that cannot mirror, and why (a shadow phase is refused with them)."""


class Router(_Model):
    type: Literal["kserve", "kserve-raw", "istio", "gateway-api"] = Field(
        "kserve",
        description=(
            "kserve: spec.predictor.canaryTrafficPercent (Serverless); kserve-raw: spec.canary[] "
            "(KServe >= 0.20 Standard mode); istio: weights of a VirtualService route; "
            "gateway-api: weights of an HTTPRoute rule's two backendRefs."
        ),
    )
    istio: IstioRoute | None = None
    gateway_api: GatewayApiRoute | None = None

    @model_validator(mode="before")
    @classmethod
    def _settings(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        kind = data.get("type", "kserve")
        for rtype, key in ROUTER_SETTINGS.items():
            given = data.get(key) or data.get(to_snake(key))
            if kind == rtype and not given:
                needs = {
                    "istio": "istio.virtualService, istio.stableHost and istio.canaryHost",
                    "gateway-api": "gatewayApi.httpRoute, gatewayApi.ruleName (or ruleIndex), "
                    "gatewayApi.stableBackend and gatewayApi.canaryBackend",
                }[rtype]
                raise at(key, f"router type {rtype!r} needs {needs}")
            if given and kind != rtype:
                raise at(key, f"{key} settings given but router type is {kind!r}")
        return data

    @property
    def can_mirror(self) -> bool:
        """Whether this router can mirror traffic to the canary (a shadow phase)."""
        return self.type not in MIRROR_UNSUPPORTED


class Step(_Model):
    weight: Percent = Field(description="Canary traffic percent during this step.")
    min_dwell: Duration | None = Field(None, description="Minimum time at this step.")
    min_canary_requests: int | None = Field(
        None, ge=0, description="Minimum canary requests seen during this step."
    )


def _step(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        return {"weight": v}
    return v


StepItem = Annotated[Step, BeforeValidator(_step, json_schema_input_type=int | Step)]


class Shadow(_Model):
    """The shadow phase: before any user is sent to the canary, it gets mirrored copies."""

    duration: Duration = Field(600.0, description="Minimum time in shadow before the first step.")
    min_canary_requests: int = Field(
        100, ge=0, description="Minimum mirrored canary requests seen before the first step."
    )
    mirror_percent: Annotated[float, Field(gt=0.0, le=100.0)] | None = Field(
        None,
        description=(
            "Share of the route's requests copied to the canary, in percent (up to two "
            "decimals). Default: the first step's weight, the load the canary is sized for."
        ),
    )

    @field_validator("mirror_percent")
    @classmethod
    def _hundredths(cls, v: float | None) -> float | None:
        if v is not None and abs(v * 100 - round(v * 100)) > 1e-6:
            raise ValueError(f"expected a percent with at most two decimals, got {v!r}")
        return v


class Steps(_Model):
    weights: list[StepItem] | None = Field(
        None, description="Canary percents in order, each a number or {weight, minDwell, ...}."
    )
    step_weight: Annotated[int, Field(gt=0, le=100, strict=True)] | None = Field(
        None, description="Increment between steps (with maxWeight), Flagger-style."
    )
    max_weight: Annotated[int, Field(gt=0, le=100, strict=True)] | None = Field(
        None, description="Last step's percent (with stepWeight)."
    )
    min_dwell: Duration = Field(300.0, description="Default minimum time at each step.")
    min_canary_requests: int = Field(
        100, ge=0, description="Default minimum canary requests seen during each step."
    )
    shadow: Shadow | None = Field(
        None,
        description="A shadow phase before the first step: the canary is judged on mirrored "
        "traffic that no user depends on (needs router istio or gateway-api).",
    )

    @model_validator(mode="after")
    def _shape(self) -> Steps:
        if self.weights is not None and (self.step_weight or self.max_weight):
            raise at("weights", "give either weights or stepWeight/maxWeight, not both")
        if self.weights is None:
            if self.step_weight is None or self.max_weight is None:
                raise at("weights", "expected weights, or both stepWeight and maxWeight")
            if self.step_weight > self.max_weight:
                raise at("stepWeight", "stepWeight must not exceed maxWeight")
        else:
            if not self.weights:
                raise at("weights", "expected at least one step")
            ws = [s.weight for s in self.weights]
            for i, (a, b) in enumerate(itertools.pairwise(ws)):
                if b <= a:
                    raise at(f"weights[{i + 1}]", f"steps must increase: {b} follows {a}")
            if ws[0] <= 0:
                raise at("weights[0]", "the first step must send the canary some traffic (> 0)")
        return self

    def resolved(self) -> list[Step]:
        """Every step with its dwell and minimum requests filled in."""
        if self.weights is not None:
            raw = list(self.weights)
        else:
            assert self.step_weight is not None and self.max_weight is not None
            ws = list(range(self.step_weight, self.max_weight + 1, self.step_weight))
            if ws[-1] != self.max_weight:
                ws.append(self.max_weight)
            raw = [Step(weight=w) for w in ws]
        # Values are validated already; construct without re-parsing durations.
        return [
            Step.model_construct(
                weight=s.weight,
                min_dwell=self.min_dwell if s.min_dwell is None else s.min_dwell,
                min_canary_requests=(
                    self.min_canary_requests
                    if s.min_canary_requests is None
                    else s.min_canary_requests
                ),
            )
            for s in raw
        ]

    def mirror_percent(self) -> float:
        """The shadow phase's mirror share in percent (its default: the first step's weight)."""
        if self.shadow is None:
            return 0.0
        if self.shadow.mirror_percent is not None:
            return self.shadow.mirror_percent
        return float(self.resolved()[0].weight)


JudgeName = Literal["sequential", "mann-whitney", "ks", "welch-t", "chi-square", "threshold"]
CLASSIC_JUDGES = frozenset({"mann-whitney", "ks", "welch-t", "chi-square", "threshold"})

MetricKind = Literal[
    "errors",
    "latency",
    "custom",
    "ttft",
    "inter-token",
    "output-length",
    "finish-reason",
    "categorical",
    "quality",
]
HISTOGRAM_KINDS = frozenset({"latency", "ttft", "inter-token", "output-length"})
"""Kinds judged on a histogram's exceedances above stable's quantile boundaries."""
LLM_KINDS = frozenset({"ttft", "inter-token", "output-length", "finish-reason"})
"""Kinds that read vLLM's own series (``source.preset: vllm``)."""
CATEGORY_KINDS = frozenset({"categorical", "finish-reason"})
"""Kinds judged on counts per category (shares), two-sided."""
SEQUENTIAL_ONLY_KINDS = LLM_KINDS | CATEGORY_KINDS | {"quality"}
"""Kinds no classic judge understands."""
DEFAULT_TOLERANCE: dict[str, float] = {
    "errors": 0.2,
    "latency": 0.1,
    "custom": 0.0,
    "ttft": 0.1,
    "inter-token": 0.1,
    "output-length": 0.2,
    "finish-reason": 0.25,
    "categorical": 0.2,
    "quality": 0.1,
}
"""``maxRelativeIncrease`` when a metric gives none (the reasoning is in policies/README.md)."""
DEFAULT_QUANTILES: dict[str, list[float]] = {
    "ttft": [0.5, 0.9],
    "inter-token": [0.5, 0.9],
    "output-length": [0.5, 0.9],
}
"""``quantiles`` when a metric gives none; every other kind: ``[0.5, 0.99]``."""
POD_SPREAD_LIMITS: dict[str, float] = {"errors": 64.0, "latency": 10.0}
"""Largest ``podSpread`` per kind: the rate-ratio grid ends at x64, and a latency ratio of 10
already leaves no boundary anything to detect."""
DEFAULT_JUDGE: dict[str, JudgeName] = {"custom": "mann-whitney"}
"""``judge`` when a metric gives none; every other kind: ``sequential``."""
VLLM_FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
"""vLLM's ``finished_reason`` values (``FINISH_REASON_STRINGS``, vllm/v1/engine/__init__.py)."""


class Metric(_Model):
    name: str = Field(
        description="Unique metric name, used in verdicts, Events and reports.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    )
    kind: MetricKind = Field(
        description=(
            "errors | latency | custom; for LLMs on vLLM (source.preset: vllm): ttft, "
            "inter-token, output-length, finish-reason; for classifiers: categorical "
            "(prediction shares) and quality (accuracy from delayed labels)."
        )
    )
    judge: JudgeName = Field(
        "sequential",
        description="How canary is compared with stable. Default per kind: custom "
        "mann-whitney (a custom metric gives one value per interval, no counts), every other "
        "kind sequential.",
    )
    max_relative_increase: float | None = Field(
        None,
        ge=0.0,
        le=10.0,
        description=(
            "Tolerance. errors: the canary's error rate may be at most (1 + this) x stable's. "
            "latency, ttft, inter-token, output-length: the share of canary observations above "
            "each tested stable quantile boundary may be at most (1 + this) x stable's. "
            "categorical, finish-reason: each category's canary share may be between "
            "1/(1 + this) and (1 + this) x stable's. quality: the canary's rate of wrong "
            "predictions may be at most (1 + this) x stable's. Defaults: errors 0.2, latency "
            "0.1, custom 0, ttft 0.1, inter-token 0.1, output-length 0.2, finish-reason 0.25, "
            "categorical 0.2, quality 0.1."
        ),
    )
    quantiles: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        default_factory=lambda: [0.5, 0.99],
        description=(
            "latency, ttft, inter-token, output-length: quantiles whose stable bucket "
            "boundaries are tested (default [0.5, 0.99] for latency, [0.5, 0.9] for the others)."
        ),
    )
    omnibus: bool = Field(
        False, description="latency, sequential: also test the whole bucket distribution."
    )
    critical: bool = Field(True, description="A failing critical metric rolls the canary back.")
    pod_spread: float | None = Field(
        None,
        ge=1.0,
        description=(
            "errors, latency (sequential): how much two pods of one version may differ, "
            "assumed where stable's own pods cannot show it: with fewer than 3 stable pods "
            "for the whole rollout, and until stable's pods have 30 events each (120 in all "
            "from four pods on). errors: a ratio of error rates (default 4, at most 64); "
            "latency: a ratio of latencies "
            "(default 3, at most 10). Then the false-rollback guarantee rests on it, and a "
            "canary is rolled back only when it is worse than stable by more than that: "
            "`canaryd plan --pods` shows what it costs."
        ),
    )
    weight: float = Field(
        1.0,
        ge=0.001,
        le=1000.0,
        description="Share of the policy's alpha (by weight), between 0.001 and 1000.",
    )
    query: str | None = Field(
        None,
        description=(
            "custom: PromQL template of one value per version; categorical: of counts per "
            "version and category (keep categoryLabel in the result). {revisions}, {namespace}, "
            "{interval} and {version_label} are filled in."
        ),
    )
    category_label: str | None = Field(
        None,
        description="categorical: the label of the query's result that holds the category.",
    )
    categories: list[str] | None = Field(
        None,
        description=(
            "categorical, finish-reason: the categories tested one by one; any other category "
            "is pooled as '(other)'. Default: finish-reason vLLM's stop, length, abort, error, "
            "repetition; categorical the categories seen before testing starts."
        ),
    )
    correct_query: str | None = Field(
        None,
        description="quality: PromQL template of correctly predicted, labelled predictions.",
    )
    labelled_query: str | None = Field(
        None,
        description="quality: PromQL template of predictions whose true label arrived.",
    )
    min: float | None = Field(None, description="threshold: smallest acceptable canary value.")
    max: float | None = Field(None, description="threshold: largest acceptable canary value.")
    failure_limit: int = Field(5, ge=1, description="threshold: failed checks before failing.")
    confidence: float = Field(0.98, gt=0.5, lt=1.0, description="mann-whitney: confidence level.")
    min_intervals: int = Field(
        5, ge=2, description="Classic judges: intervals per version before judging."
    )

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data: Any) -> Any:
        kind = data.get("kind") if isinstance(data, dict) else None
        if not isinstance(kind, str):
            return data  # the field's own validation reports a kind that is no string
        if kind in SEQUENTIAL_ONLY_KINDS and kind not in HISTOGRAM_KINDS:
            for key in ("quantiles", "omnibus"):
                if key in data:
                    raise at(
                        key,
                        "only histogram metrics (latency, ttft, inter-token, output-length) "
                        f"use it, not {kind!r}",
                    )
        if isinstance(data, dict) and "quantiles" not in data:
            default = DEFAULT_QUANTILES.get(str(data.get("kind")))
            if default is not None:
                data = {**data, "quantiles": list(default)}
        if isinstance(data, dict) and "judge" not in data and kind in DEFAULT_JUDGE:
            data = {**data, "judge": DEFAULT_JUDGE[kind]}
        return data

    @model_validator(mode="after")
    def _fit(self) -> Metric:
        if self.kind == "custom" and not self.query:
            raise at("query", "a custom metric needs a PromQL query template")
        if self.kind == "categorical" and not self.query:
            raise at(
                "query",
                "a categorical metric needs a PromQL query template of counts per version and "
                "category",
            )
        if self.kind not in ("custom", "categorical") and self.query:
            raise at(
                "query", f"query is only for custom and categorical metrics, not {self.kind!r}"
            )
        if self.kind == "categorical" and not self.category_label:
            raise at(
                "categoryLabel", "a categorical metric needs the label that holds the category"
            )
        if self.kind != "categorical" and self.category_label:
            raise at(
                "categoryLabel", f"categoryLabel is only for categorical metrics, not {self.kind!r}"
            )
        if self.category_label is not None and not re.match(
            r"^[a-zA-Z_][a-zA-Z0-9_]*$", self.category_label
        ):
            raise at(
                "categoryLabel", f"expected a Prometheus label name, got {self.category_label!r}"
            )
        if self.categories is not None:
            if self.kind not in CATEGORY_KINDS:
                raise at(
                    "categories",
                    f"categories are only for categorical and finish-reason metrics, not "
                    f"{self.kind!r}",
                )
            if not self.categories:
                raise at("categories", "expected at least one category")
            if len(self.categories) > MAX_CATEGORIES:
                raise at(
                    "categories",
                    f"at most {MAX_CATEGORIES} categories are tested one by one, got "
                    f"{len(self.categories)} "
                    "(list the ones that matter; the others are pooled as '(other)')",
                )
            if len(set(self.categories)) != len(self.categories):
                raise at("categories", "categories repeat")
            if OTHER_CATEGORY in self.categories:
                raise at("categories", f"{OTHER_CATEGORY!r} is reserved for unlisted categories")
        if self.kind == "quality":
            if not self.correct_query or not self.labelled_query:
                raise at(
                    "correctQuery" if not self.correct_query else "labelledQuery",
                    "a quality metric needs correctQuery and labelledQuery (PromQL templates of "
                    "correct and of labelled predictions per version)",
                )
        elif self.correct_query or self.labelled_query:
            raise at(
                "correctQuery" if self.correct_query else "labelledQuery",
                f"correctQuery and labelledQuery are only for quality metrics, not {self.kind!r}",
            )
        if self.pod_spread is not None:
            limit = POD_SPREAD_LIMITS.get(self.kind)
            if limit is None or self.judge != "sequential":
                raise at(
                    "podSpread",
                    "podSpread is read by the sequential errors and latency judges only, not "
                    f"by kind {self.kind!r} with judge {self.judge!r}",
                )
            if self.pod_spread > limit:
                raise at(
                    "podSpread",
                    f"expected a {self.kind} podSpread of at most {limit:g}, got "
                    f"{self.pod_spread:g}",
                )
        if self.kind in SEQUENTIAL_ONLY_KINDS and self.judge != "sequential":
            raise at(
                "judge",
                f"kind {self.kind!r} is judged by the sequential judge only, not {self.judge!r}",
            )
        if self.judge == "threshold" and self.min is None and self.max is None:
            raise at("judge", "the threshold judge needs min or max")
        if self.judge != "threshold" and (self.min is not None or self.max is not None):
            raise at("judge", f"min/max are only used by the threshold judge, not {self.judge!r}")
        if self.kind == "custom" and self.judge in ("sequential", "chi-square"):
            raise at(
                "judge",
                f"judge {self.judge!r} needs counts; a custom metric gives one value per "
                "interval (use mann-whitney, ks, welch-t or threshold)",
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise at("min", f"min ({self.min}) is above max ({self.max})")
        if len(set(self.quantiles)) != len(self.quantiles):
            raise at("quantiles", "quantiles repeat")
        return self

    @property
    def tolerance(self) -> float:
        if self.max_relative_increase is not None:
            return self.max_relative_increase
        return DEFAULT_TOLERANCE[self.kind]

    @property
    def peeking_safe(self) -> bool:
        return self.judge == "sequential"

    @property
    def fixed_categories(self) -> tuple[str, ...] | None:
        """The categories tested one by one, when known before any data (None: learned)."""
        if self.categories is not None:
            return tuple(self.categories)
        if self.kind == "finish-reason":
            return VLLM_FINISH_REASONS
        return None


class Queries(_Model):
    requests: str = Field(description="Increase of requests per version over {interval}.")
    errors: str = Field(description="Increase of failed requests per version over {interval}.")
    latency_buckets: str | None = Field(
        None, description="Increase of latency buckets (ms) per version and le over {interval}."
    )


_CREDENTIALS_REF = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.(?:/|$))[A-Za-z0-9._/-]+$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
"""Headers that carry credentials: never written inline (use a token or password file)."""


def _credentials_ref(v: str) -> str:
    if not _CREDENTIALS_REF.match(v):
        raise ValueError(
            f"expected a file name relative to the daemon's credentials directory (letters, "
            f"digits, '.', '_', '-', '/'; no leading '/', no '..'), got {v!r}"
        )
    return v


CredentialsFile = Annotated[
    str,
    AfterValidator(_credentials_ref),
    Field(
        description="A file under the daemon's credentials directory (--credentials-dir, "
        "default /etc/canaryd/credentials), e.g. 'thanos-token'. Never the secret itself."
    ),
]


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    """Plain extra headers: valid names, single-line values, no credential-bearing header."""
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"invalid HTTP header name {name!r}")
        if name.lower() in SECRET_HEADERS:
            raise ValueError(
                f"header {name!r} carries credentials and may not be written inline; use "
                "bearerTokenFile or basicAuth"
            )
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r}: the value must be a single line")
    return headers


class BasicAuth(_Model):
    username: str = Field(description="User name (not secret).", min_length=1)
    password_file: CredentialsFile = Field(description="File holding the password.")


class SourceAuth(_Model):
    bearer_token_file: CredentialsFile | None = Field(
        None, description="File holding a bearer token; re-read when it changes."
    )
    basic_auth: BasicAuth | None = Field(None, description="HTTP basic auth.")
    headers: Annotated[dict[str, str], AfterValidator(check_headers)] = Field(
        default_factory=dict,
        description="Extra request headers, e.g. X-Scope-OrgID for a Mimir/Cortex tenant "
        "(no Authorization or Cookie: those come from files).",
    )

    @model_validator(mode="after")
    def _one(self) -> SourceAuth:
        if self.bearer_token_file is not None and self.basic_auth is not None:
            raise at("basicAuth", "give bearerTokenFile or basicAuth, not both")
        return self


class SourceTls(_Model):
    ca_file: CredentialsFile | None = Field(
        None, description="PEM file of the CA(s) that sign the server's certificate."
    )
    cert_file: CredentialsFile | None = Field(None, description="Client certificate (PEM).")
    key_file: CredentialsFile | None = Field(None, description="Client certificate's key (PEM).")
    insecure_skip_verify: bool = Field(
        False, description="Do not verify the server's certificate (never in production)."
    )

    @model_validator(mode="after")
    def _pair(self) -> SourceTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise at("certFile", "certFile and keyFile go together")
        return self


def _checked_url(v: str | None) -> str | None:
    """``v`` when it is a usable http(s) URL (or None); ValueError saying why not."""
    if v is not None:
        from canaryd.outbound import check_url

        problem = check_url(v)
        if problem is not None:
            raise ValueError(problem)
    return v


class Source(_Model):
    preset: Literal["istio", "knative", "kserve", "vllm", "custom"] = Field(
        "istio",
        description=(
            "Which metric names and labels to query. vllm: vLLM's own vllm:* series (also "
            "KServe's Hugging Face runtime with the vLLM backend)."
        ),
    )
    prometheus: str | None = Field(
        None,
        description="Prometheus base URL for this policy; overrides the daemon's default "
        "(--prometheus, $CANARYD_PROMETHEUS_URL).",
    )
    auth: SourceAuth | None = Field(
        None,
        description="Credentials by file reference. With no prometheus URL, or one on the "
        "daemon's origin, they refine the daemon's own; elsewhere they are the only ones sent.",
    )
    tls: SourceTls | None = Field(None, description="TLS settings by file reference.")
    version_label: str | None = Field(
        None,
        description=(
            "Label that tells versions apart (default per preset: istio destination_workload, "
            "knative revision_name, kserve and vllm serving_knative_dev_revision)."
        ),
    )
    pod_label: str | None = Field(
        None,
        pattern=r"^([a-zA-Z_][a-zA-Z0-9_]*)?$",
        description=(
            "Label that tells a version's pods apart, so the queries also return per-pod counts "
            "(default per preset: istio, kserve and vllm pod, knative pod_name, custom none). "
            "An empty string turns it off; custom: your templates must keep it in by (...)."
        ),
    )
    error_codes: str = Field("5..", description="Regex of response codes counted as errors.")
    errors_metric: str | None = Field(
        None,
        pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
        description=(
            "kserve: a counter of failed predictions with the latency histogram's labels (KServe "
            "exports none; e.g. one the model server increments). Without it errors are not "
            "measured, in the cluster and in simulations alike."
        ),
    )
    latency_unit: Literal["ms", "s"] | None = Field(
        None, description="Unit of the latency histogram (default per preset)."
    )
    queries: Queries | None = Field(None, description="custom: PromQL templates.")

    @field_validator("prometheus")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _checked_url(v)

    @field_validator("error_codes")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                re.compile(v)
        except re.error as exc:
            raise ValueError(f"expected a regular expression of response codes: {exc}") from None
        return v

    @model_validator(mode="after")
    def _custom(self) -> Source:
        if self.preset == "custom" and self.queries is None:
            raise at("queries", "preset 'custom' needs queries.requests and queries.errors")
        if self.preset != "custom" and self.queries is not None:
            raise at("queries", f"queries are only used with preset 'custom', not {self.preset!r}")
        if self.pod_label and self.pod_label in {self.version_label, "le"}:
            raise at(
                "podLabel",
                f"podLabel {self.pod_label!r} would group by a label the queries already use "
                "(the version label or le): name the label that tells pods apart",
            )
        if self.preset != "kserve" and self.errors_metric is not None:
            raise at(
                "errorsMetric",
                f"errorsMetric is only used with preset 'kserve', not {self.preset!r} (which "
                "counts errors from its own series)",
            )
        return self

    @property
    def measures_errors(self) -> bool:
        """Whether this source can count failed requests: every preset but kserve without an
        ``errorsMetric`` (KServe's own histogram has no status label)."""
        return self.preset != "kserve" or self.errors_metric is not None


def _default_metrics() -> list[Metric]:
    return [
        Metric(name="errors", kind="errors"),
        Metric(name="latency", kind="latency"),
    ]


class Analysis(_Model):
    interval: Duration = Field(60.0, description="How often canary is compared with stable.")
    alpha: float = Field(
        0.01,
        gt=0.0,
        lt=0.5,
        description="Total false-rollback probability, split across metrics by weight.",
    )
    metrics: list[Metric] = Field(
        default_factory=_default_metrics,
        description="Default: sequential errors and latency (p50, p99) judges.",
    )
    source: Source = Field(default_factory=Source)
    history: Duration = Field(
        7200.0,
        description="How much of stable's traffic from just before the canary started is read "
        "(once, at the start) to choose the latency boundaries and to learn how much stable's "
        "pods differ, so that testing starts with the first interval; never the canary's data, "
        "and never a baseline for the test itself. With less history than the boundaries need "
        "(or 0s), they are chosen from stable's first requests during the canary. At most 7d.",
    )

    @field_validator("history")
    @classmethod
    def _history(cls, v: float) -> float:
        if v > 7 * 86400:
            raise ValueError(f"expected a history of at most 7d, got {v:g}s")
        return v

    @field_validator("interval")
    @classmethod
    def _interval(cls, v: float) -> float:
        if v < 5:
            raise ValueError(
                f"an analysis interval under 5s is shorter than any scrape, got {v:g}s"
            )
        return v

    @model_validator(mode="after")
    def _unique(self) -> Analysis:
        if not self.metrics:
            raise at("metrics", "expected at least one metric")
        seen: set[str] = set()
        for i, m in enumerate(self.metrics):
            if m.name in seen:
                raise at(f"metrics[{i}].name", f"metric name {m.name!r} is used twice")
            seen.add(m.name)
        if not any(m.critical for m in self.metrics):
            raise at("metrics", "at least one metric must be critical, or nothing can roll back")
        for i, m in enumerate(self.metrics):
            if m.kind in LLM_KINDS and self.source.preset != "vllm":
                raise at(
                    f"metrics[{i}].kind",
                    f"kind {m.kind!r} reads vLLM's own series: set analysis.source.preset: vllm "
                    f"(the preset is {self.source.preset!r})",
                )
        return self

    def alpha_for(self, metric: Metric) -> float:
        total = sum(m.weight for m in self.metrics)
        return self.alpha * metric.weight / total


class NoData(_Model):
    timeout: Duration = Field(600.0, description="How long missing data is tolerated.")
    action: Literal["pause", "rollback"] = Field(
        "pause", description="What follows the timeout. Missing data never promotes."
    )


class SecretRef(_Model):
    """Where a value that holds a secret (a webhook URL with its token) comes from."""

    file: CredentialsFile | None = Field(
        None,
        description="A file under the daemon's credentials directory, e.g. 'slack-webhook-url'.",
    )
    env: str | None = Field(
        None,
        pattern=r"^CANARYD_WEBHOOK_[A-Z0-9_]+$",
        description="An environment variable of the daemon; only CANARYD_WEBHOOK_* names.",
    )

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        if (self.file is None) == (self.env is None):
            raise at("file", "give exactly one of file or env")
        return self


class Endpoint(_Model):
    """An HTTP endpoint canaryd POSTs to: a plain URL or a secret reference, and a deadline."""

    url: str | None = Field(
        None,
        description="http(s) URL with no secret in it (a URL that carries a token, as Slack's "
        "and Teams' do, goes in urlFrom).",
    )
    url_from: SecretRef | None = Field(None, description="Where the URL is read from.")
    timeout: Duration = Field(5.0, description="Total deadline of one attempt.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _checked_url(v)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: float) -> float:
        if not 0 < v <= 60:
            raise ValueError(f"expected a timeout between 0 and 60s, got {v:g}s")
        return v

    @model_validator(mode="after")
    def _one_url(self) -> Endpoint:
        if (self.url is None) == (self.url_from is None):
            raise at("url", "give exactly one of url or urlFrom")
        return self


NOTIFIABLE = (
    "CanaryStarted",
    "WeightChanged",
    "Promoted",
    "RolledBack",
    "Paused",
    "Resumed",
    "AnalysisInconclusive",
    "AwaitingConfirmation",
    "WindowClosed",
    "Aborted",
)
"""Decision reasons a webhook can subscribe to (``canaryd.reasons.Reason`` values)."""


class Webhook(Endpoint):
    format: Literal["json", "slack", "teams"] = Field(
        "json",
        description="json: canaryd's versioned schema; slack: {text, blocks}; teams: a "
        "MessageCard.",
    )
    events: list[Literal[NOTIFIABLE]] | None = Field(  # type: ignore[valid-type]
        None, description="Only these decision reasons (default: every decision with an Event)."
    )


class Notifications(_Model):
    webhooks: list[Webhook] = Field(
        default_factory=list, description="Each receives every decision (with an Event) as JSON."
    )


class Confirm(Endpoint):
    """spec.promotion.confirm: a webhook that must answer 2xx before a promotion."""

    timeout: Duration = Field(10.0, description="Total deadline of one ask.")


class Promotion(_Model):
    criterion: Literal["afterSteps", "nonInferiority"] = Field(
        "afterSteps",
        description=(
            "afterSteps: promote after the last step with no failing and no inconclusive "
            "critical metric. nonInferiority: promote only when every critical metric is shown "
            "no worse than tolerated."
        ),
    )
    max_duration: Duration = Field(
        86400.0, description="Longest a rollout may run before it pauses for a human."
    )
    min_detectable_effect: dict[str, Annotated[float, Field(gt=1.0, le=100.0)]] = Field(
        default_factory=dict,
        description=(
            "Per metric name, the canary/stable ratio a rollout must be able to detect. "
            "canaryd derives the canary requests needed from the two-sample floor."
        ),
    )
    on_insufficient_evidence: Literal["hold", "pause"] = Field(
        "hold", description="What to do at the last step while the needed requests are not met."
    )
    confirm: Confirm | None = Field(
        None,
        description="A webhook that must approve (HTTP 2xx) before the promotion; asked once per "
        "analysis interval while the rollout holds at its last step.",
    )


class Window(_Model):
    schedule: str = Field(
        description="Crontab expression (APScheduler CronTrigger.from_crontab); the rollout may "
        "advance during minutes it matches, e.g. '* 9-16 * * mon-fri'."
    )
    timezone: str = Field("UTC", description="IANA timezone of the schedule.")

    @model_validator(mode="after")
    def _cron(self) -> Window:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from apscheduler.triggers.cron import CronTrigger

        try:
            tz = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a directory
            raise at("timezone", f"unknown timezone {self.timezone!r}") from None
        try:
            CronTrigger.from_crontab(self.schedule, timezone=tz)
        except ValueError as exc:
            raise at("schedule", f"invalid crontab expression {self.schedule!r}: {exc}") from None
        return self


class PolicySpec(_Model):
    target: Target
    router: Router = Field(default_factory=Router)
    steps: Steps = Field(default_factory=lambda: Steps(step_weight=5, max_weight=50))
    analysis: Analysis = Field(default_factory=Analysis)
    no_data: NoData = Field(default_factory=NoData)
    on_failure: Literal["rollback", "pause"] = Field(
        "rollback", description="What a failing critical metric does."
    )
    promotion: Promotion = Field(default_factory=Promotion)
    window: Window | None = None
    notifications: Notifications = Field(default_factory=Notifications)

    @model_validator(mode="after")
    def _cross(self) -> PolicySpec:
        if self.steps.shadow is not None and not self.router.can_mirror:
            raise at(
                "steps.shadow",
                f"router type {self.router.type!r} cannot run a shadow phase: "
                + MIRROR_UNSUPPORTED[self.router.type],
            )
        names = {m.name for m in self.analysis.metrics}
        for key in self.promotion.min_detectable_effect:
            if key not in names:
                raise at(
                    f"promotion.minDetectableEffect.{key}",
                    f"no metric named {key!r} (metrics: {', '.join(sorted(names))})",
                )
        for key, mde in self.promotion.min_detectable_effect.items():
            metric = next(m for m in self.analysis.metrics if m.name == key)
            if metric.kind in CATEGORY_KINDS:
                raise at(
                    f"promotion.minDetectableEffect.{key}",
                    f"a {metric.kind} metric tests every category's share; one ratio cannot say "
                    "how much evidence that needs (list it without a minimum detectable effect)",
                )
            if mde <= 1.0 + metric.tolerance:
                raise at(
                    f"promotion.minDetectableEffect.{key}",
                    f"{mde:g} is inside the metric's tolerance (1 + {metric.tolerance:g}); "
                    "nothing below it counts as a regression",
                )
        if self.promotion.criterion == "nonInferiority":
            for i, m in enumerate(self.analysis.metrics):
                if m.critical and not m.peeking_safe:
                    raise at(
                        f"analysis.metrics[{i}].judge",
                        f"criterion nonInferiority needs sequential judges on critical metrics; "
                        f"{m.judge!r} cannot show non-inferiority",
                    )
        return self


class CanaryPolicy(_Model):
    api_version: Literal["canaryd.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["CanaryPolicy"]
    metadata: Metadata
    spec: PolicySpec

    @property
    def name(self) -> str:
        return self.metadata.name


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of one policy document (``policies/schema.json``)."""
    schema = CanaryPolicy.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://canaryd.io/schemas/v1alpha1/canarypolicy.json"
    schema["title"] = "CanaryPolicy"
    return schema
