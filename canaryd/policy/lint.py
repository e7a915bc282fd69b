"""Warnings about valid but risky policies (``canaryd validate`` prints them; --strict fails)."""

from __future__ import annotations

import re
import urllib.parse

from canaryd.durations import format_duration
from canaryd.errors import Problem
from canaryd.policy.loader import LoadedPolicy
from canaryd.policy.model import POD_SPREAD_LIMITS

_TOKEN_HOSTS = re.compile(
    r"(^|\.)(hooks\.slack\.com|webhook\.office\.com|outlook\.office\.com|discord(app)?\.com"
    r"|chat\.googleapis\.com)$"
)
_TOKEN_PARAMS = re.compile(r"(?i)(token|key|secret|sig|signature|password|auth)")


def url_holds_a_secret(url: str) -> bool:
    """Whether ``url`` looks like one that carries its own credential (Slack, Teams, Discord
    and Google Chat webhooks, or a query parameter named like a token)."""
    parts = urllib.parse.urlsplit(url)
    if _TOKEN_HOSTS.search((parts.hostname or "").lower()):
        return True
    return any(_TOKEN_PARAMS.search(k) for k, _ in urllib.parse.parse_qsl(parts.query))


def lint(loaded: LoadedPolicy) -> list[Problem]:
    """Warnings for one loaded policy."""
    p = loaded.policy
    spec = p.spec
    out: list[Problem] = []

    def warn(path: str, message: str, at: str | None = None) -> None:
        """A warning about the field at ``path`` (printed), located at ``at`` (default: the
        same field, or its nearest ancestor the document spells out)."""
        line, column = loaded.position(at or path)
        out.append(Problem(loaded.file, line, column, f"{p.name}: {path}", message, "warning"))

    every = format_duration(spec.analysis.interval)
    for i, m in enumerate(spec.analysis.metrics):
        if m.judge == "threshold":
            warn(
                f"spec.analysis.metrics[{i}].judge",
                f"'threshold' checks a fixed min/max on the canary's value, re-checked every "
                f"{every}: it compares nothing with stable and has no false-rollback guarantee "
                "(use judge: sequential where the kind allows)",
            )
        elif not m.peeking_safe:
            warn(
                f"spec.analysis.metrics[{i}].judge",
                f"{m.judge!r} is a fixed-horizon test re-run every {every}; it is not "
                "peeking-safe and its false-rollback rate grows with every look (use judge: "
                "sequential)",
            )
    src = spec.analysis.source
    no_pods = src.pod_label == "" or (src.preset == "custom" and src.pod_label is None)
    if no_pods:
        off = "podLabel is off" if src.pod_label == "" else "preset custom names no podLabel"
        for i, m in enumerate(spec.analysis.metrics):
            if m.pod_spread is not None:
                warn(
                    f"spec.analysis.metrics[{i}].podSpread",
                    f"has no effect: {off}, so the source reports no per-pod counts and the "
                    "judges take requests as exchangeable between versions",
                )
    pod_aware = any(
        m.judge == "sequential" and m.kind in POD_SPREAD_LIMITS for m in spec.analysis.metrics
    )
    if spec.analysis.history == 0 and pod_aware and not no_pods:
        warn(
            "spec.analysis.history",
            "0s: how much stable's pods differ is then learned during the canary, and the "
            "latency boundaries are chosen from stable's first requests. In the pod study "
            "(analysis/results/pods.md) this made errors x2 on 4 alike stable pods take a "
            "median 75 min to roll back instead of 19, and let false rollbacks on pods that "
            "differ reach 0.38 % per judge (95 % upper bound 0.58 %) at alpha 1 %, against at "
            "most 0.30 % (upper bound 0.49 %) with the default 2h; a rollout judged by both "
            "metrics at the default split, 0.38 % (upper bound 0.58 %) against 0.33 % (0.52 %)",
        )
    steps = spec.steps.resolved()
    for i, s in enumerate(steps):
        if s.min_dwell is not None and s.min_dwell < spec.analysis.interval:
            own = spec.steps.weights is not None and spec.steps.weights[i].min_dwell is not None
            warn(
                f"spec.steps (step {i + 1})",
                f"minDwell {format_duration(s.min_dwell)} is shorter than the analysis interval "
                f"{format_duration(spec.analysis.interval)}: the step can end unanalysed",
                at=f"spec.steps.weights[{i}].minDwell" if own else "spec.steps.minDwell",
            )
    if spec.no_data.timeout < spec.analysis.interval:
        warn(
            "spec.noData.timeout",
            "shorter than one analysis interval: a single late scrape triggers the action",
        )
    if spec.on_failure == "pause":
        warn("spec.onFailure", "a failing canary keeps its traffic until a human acts")
    shadow = spec.steps.shadow
    if shadow is not None:
        if shadow.duration < spec.analysis.interval:
            warn(
                "spec.steps.shadow.duration",
                f"{format_duration(shadow.duration)} is shorter than the analysis interval "
                f"{format_duration(spec.analysis.interval)}: the shadow phase can end unanalysed",
            )
        if spec.analysis.source.preset != "istio":
            warn(
                "spec.steps.shadow",
                f"the {spec.analysis.source.preset!r} metric preset cannot tell mirrored requests "
                "apart: in the shadow phase every canary request counts as mirrored, so users "
                "sent to the canary by another route (a header match) count zero in the user "
                "impact (the istio preset tells them apart)",
            )
    src = spec.analysis.source
    if spec.router.type == "kserve" and src.preset == "istio" and src.version_label is None:
        warn(
            "spec.analysis.source.preset",
            "router 'kserve' with preset 'istio' (the default preset): Istio's "
            "destination_workload names each revision's Deployment only where the mesh labels "
            "requests that way, otherwise both revisions look alike and the rollout gets no "
            "data (use preset: knative, which reads the queue-proxy's revision_name, or set "
            "source.versionLabel to a label that names the revision)",
        )
    if not src.measures_errors:
        for i, m in enumerate(spec.analysis.metrics):
            if m.kind == "errors":
                warn(
                    f"spec.analysis.metrics[{i}]",
                    f"errors are not measured: the kserve preset has no error counter unless "
                    f"spec.analysis.source.errorsMetric names one, so {m.name!r} stays "
                    "inconclusive (in the cluster and in simulations) and the rollout cannot "
                    "promote on it",
                )
    if src.tls is not None and src.tls.insecure_skip_verify:
        warn(
            "spec.analysis.source.tls.insecureSkipVerify",
            "the server's certificate is not verified: anyone on the path can read the data "
            "and the credentials",
        )
    endpoints = [
        (f"spec.notifications.webhooks[{i}].url", h.url)
        for i, h in enumerate(spec.notifications.webhooks)
    ]
    if spec.promotion.confirm is not None:
        endpoints.append(("spec.promotion.confirm.url", spec.promotion.confirm.url))
    for path, url in endpoints:
        if url is not None and url_holds_a_secret(url):
            warn(
                path,
                "this URL looks like it carries its own token: anyone who can read the policy "
                "can use it (move it to urlFrom: {file: ...} or {env: CANARYD_WEBHOOK_...})",
            )
    has_secret = src.auth is not None and (
        src.auth.bearer_token_file is not None or src.auth.basic_auth is not None
    )
    if has_secret and src.prometheus is not None and src.prometheus.startswith("http://"):
        warn(
            "spec.analysis.source.prometheus",
            "credentials over plain http:// are readable by anyone on the path (use https://)",
        )
    return out
