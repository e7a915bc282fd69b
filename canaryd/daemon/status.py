"""What ``canaryd status`` shows: every rollout's stored state next to the live traffic split.

A rollout's row comes from its state ConfigMap (written by the daemon: at every decision, and
its evidence at least every ``--checkpoint-every`` windows) and from the object that carries
its traffic (the InferenceService or route, read live). Step numbers are 1-based everywhere
("step 2 of 3"), as in the decisions' reasons. Times to come are computed from the policy's
clocks that the daemon stores in the document (``limits``): when the next window is judged,
and, while no data arrives, when the noData timeout pauses (or rolls back) the rollout.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from canaryd.durations import format_duration
from canaryd.identity import RolloutKey
from canaryd.kube import CONFIG_MAP, INFERENCE_SERVICE, JSON, KubeObjects, raw_request
from canaryd.kube.errors import ApiError, ApiNotFoundError
from canaryd.policy.model import Router
from canaryd.routing.factory import build_router
from canaryd.state.document import StateDoc, StateDocumentError
from canaryd.state.kubernetes import DATA_KEY, MANAGED_SELECTOR, ROLLOUT_LABEL


@dataclass
class RolloutView:
    """One rollout as ``status`` reports it."""

    key: RolloutKey
    configmap: str
    doc: StateDoc | None
    problem: str | None
    router: dict[str, Any]
    now: float

    # -- derived ---------------------------------------------------------------------------

    @property
    def steps(self) -> list[int]:
        return list((self.doc.limits or {}).get("steps") or []) if self.doc else []

    def step_text(self) -> str:
        if self.doc is None:
            return "-"
        st = self.doc.state
        n = len(self.steps) or "?"
        if st.phase.value == "shadow":
            return f"shadow/{n}"
        if st.step < 0:
            return f"-/{n}"
        return f"{st.step + 1}/{n}"

    def weight_text(self) -> str:
        live = self.router.get("canary_percent")
        if self.doc is None:
            return "-" if live is None else f"{live}%"
        st = self.doc.state
        want = {"promoted": 100, "rolled_back": 0}.get(st.phase.value, st.weight)
        if live is None or live == want:
            return f"{want}%"
        return f"{want}% (cluster {live}%)"

    def age(self) -> str:
        if self.doc is None or self.doc.state.started_at is None:
            return "-"
        return format_duration(max(0.0, self.now - self.doc.state.started_at))

    def last_text(self) -> str:
        last = (self.doc.last_decision or {}) if self.doc else {}
        if not last:
            return self.problem or "-"
        return f"{last.get('action')}: {last.get('reason')}"

    def next_text(self) -> str:
        """When the next window is judged; the no-data deadline while data is missing."""
        if self.doc is None:
            return "-"
        st = self.doc.state
        if st.phase.terminal:
            return "done"
        lim = self.doc.limits or {}
        interval, settle = float(lim.get("interval") or 0), float(lim.get("settle") or 0)
        parts = []
        if self.doc.window_end is not None and interval:
            due = self.doc.window_end + interval + settle
            parts.append(f"next window in {_until(due, self.now)}")
        timeout = lim.get("no_data_timeout")
        since = st.last_data_at if st.last_data_at is not None else st.started_at
        missing = (
            st.no_data_intervals > 0
            and since is not None
            and self.doc.window_end is not None
            and self.doc.window_end > since
        )
        if missing and since is not None and timeout and st.phase.value != "paused":
            action = lim.get("no_data_action", "pause")
            parts.append(
                f"no data for {format_duration(self.now - since)}: {action} in "
                f"{_until(since + float(timeout), self.now)}"
            )
        if st.phase.value == "paused":
            parts.append("paused: waits for a human (canaryd resume/rollback)")
        return "; ".join(parts) or "-"

    # -- output ----------------------------------------------------------------------------

    def row(self) -> list[str]:
        phase = self.doc.state.phase.value if self.doc else ("invalid" if self.problem else "-")
        return [
            self.key.namespace,
            self.key.name,
            phase,
            self.step_text(),
            self.weight_text(),
            self.age(),
            _cut(self.last_text(), 60),
            _cut(self.next_text(), 60),
        ]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rollout": str(self.key),
            "state_configmap": self.configmap,
            "router": self.router,
        }
        if self.problem:
            out["problem"] = self.problem
        if self.doc is None:
            out["state"] = None
            return out
        st = self.doc.state
        out["policy"] = self.doc.policy
        out["state"] = {
            "phase": st.phase.value,
            "step": st.step + 1 if st.step >= 0 else None,
            "steps": len(self.steps) or None,
            "weight": st.weight,
            "stable_revision": st.stable_revision,
            "canary_revision": st.canary_revision,
            "started_at": st.started_at,
            "age": self.age(),
            "canary_requests": st.canary_requests,
            "canary_errors": st.canary_errors,
            "impact": st.impact.to_dict(),
            "intervals": st.intervals,
            "no_data_intervals": st.no_data_intervals,
            "reason": (self.doc.last_decision or {}).get("reason") or st.reason,
            "window_end": self.doc.window_end,
            "next": self.next_text(),
            "updated": self.doc.updated,
            "pending": None if self.doc.pending is None else self.doc.pending.to_dict(),
            "history": [{"t": h.t, "weight": h.weight, "reason": h.reason} for h in st.history],
            "pre_canary": {"stable_requests": st.pre_canary_requests, "note": st.pre_canary_note},
        }
        last = dict(self.doc.last_decision or {})
        if last:
            last["summaries"] = last.pop("verdicts", [])
            last["verdicts"] = last.pop("verdict_details", [])
        out["last_decision"] = last or None
        return out


HEADER = ["NAMESPACE", "NAME", "PHASE", "STEP", "WEIGHT", "AGE", "LAST DECISION", "NEXT"]


def table(views: list[RolloutView], *, all_namespaces: bool) -> str:
    rows = [HEADER] + [v.row() for v in views]
    if not all_namespaces:
        rows = [r[1:] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _until(t: float, now: float) -> str:
    left = t - now
    return "now" if left <= 0 else format_duration(math.ceil(left))


# -- reading ---------------------------------------------------------------------------------


def _decode(cm: JSON) -> tuple[StateDoc | None, str | None]:
    text = (cm.get("data") or {}).get(DATA_KEY)
    if text is None:
        return None, f"no {DATA_KEY} in the ConfigMap"
    try:
        return StateDoc.from_json(text), None
    except StateDocumentError as exc:
        return None, str(exc)


def _router_view(objects: KubeObjects, key: RolloutKey, doc: StateDoc | None) -> dict[str, Any]:
    spec = Router.model_validate(doc.router) if doc is not None and doc.router else Router()
    component = doc.component if doc is not None else "predictor"
    try:
        router = build_router(objects, key.namespace, key.name, component, spec)
        ts = router.status()
    except ApiNotFoundError as exc:
        return {"type": spec.type, "error": str(exc)}
    except ApiError as exc:
        return {"type": spec.type, "error": str(exc)}
    except Exception as exc:  # a router refusing the object (RoutingError) is shown, not raised
        return {"type": spec.type, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "type": spec.type,
        "stable_revision": ts.stable_revision,
        "canary_revision": ts.canary_revision,
        "canary_percent": ts.canary_percent,
        "mirror_percent": getattr(ts, "mirror_percent", None),
        "ready": ts.ready,
        "message": ts.message,
    }


def view(api: k8s.ApiClient, key: RolloutKey, now: float | None = None) -> RolloutView:
    """One rollout: its state ConfigMap (None when canaryd has not started one) and router."""
    from canaryd.state.kubernetes import configmap_name

    objects = KubeObjects(api)
    name = configmap_name(key.name)
    doc: StateDoc | None = None
    problem: str | None = None
    try:
        cm = objects.get(CONFIG_MAP, key.namespace, name)
        doc, problem = _decode(cm)
    except ApiNotFoundError:
        pass
    return RolloutView(key, name, doc, problem, _router_view(objects, key, doc), now or time.time())


def list_views(api: k8s.ApiClient, namespace: str | None) -> list[RolloutView]:
    """Every rollout canaryd keeps state for, in ``namespace`` (None: every namespace)."""
    path = CONFIG_MAP.collection_path(namespace) if namespace else "/api/v1/configmaps"
    listing = raw_request(
        api, "GET", path, query={"labelSelector": MANAGED_SELECTOR}, what="canaryd state"
    )
    objects = KubeObjects(api)
    now = time.time()
    out = []
    for cm in listing.get("items") or []:
        meta = cm.get("metadata") or {}
        ns = str(meta.get("namespace"))
        isvc = (meta.get("labels") or {}).get(ROLLOUT_LABEL) or str(meta.get("name", ""))
        owners = [
            o for o in meta.get("ownerReferences") or [] if o.get("kind") == "InferenceService"
        ]
        if owners:
            isvc = str(owners[0].get("name"))
        key = RolloutKey(ns, isvc)
        doc, problem = _decode(cm)
        out.append(
            RolloutView(
                key, str(meta.get("name")), doc, problem, _router_view(objects, key, doc), now
            )
        )
    return sorted(out, key=lambda v: (v.key.namespace, v.key.name))


def exists(api: k8s.ApiClient, key: RolloutKey) -> bool:
    try:
        KubeObjects(api).get(INFERENCE_SERVICE, key.namespace, key.name)
    except ApiNotFoundError:
        return False
    return True
