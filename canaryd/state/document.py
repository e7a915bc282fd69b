"""The persisted rollout document: what a restarted daemon needs, and nothing that grows.

One document per rollout (``data["state.json"]`` of the ConfigMap ``canaryd-<isvc>``)::

    {"version": 2,
     "policy": {"name": ..., "fingerprint": {"judges": ..., "steps": ..., "routing": ...}},
     "target_uid": <uid of the InferenceService the rollout started on>,
     "router": {...}, "component": "predictor",
     "state": <RolloutState: phase, step, weight, counters, the judges' evidence>,
     "window_end": <end of the last analysis window whose evidence is in "state">,
     "seq": <applied decisions so far: names their Events, exactly once>,
     "pending": {"action", "weight", "key", "reason", "message"[, "mirror"]} | null,
     "last_decision": <summary of the last decision> | null,
     "limits": {"interval", "settle", "steps", "no_data_timeout", ...}: the policy's clocks,
     "updated": <RFC 3339>}

Size does not grow with the rollout's age: the sequential judges' evidence is a fixed number of
grid vectors, the history holds one record per weight change (bounded by the steps) and per
pause and resume (a pause waits for a human, so these grow only with human actions), and the
last decision's summary one line per metric. Long float vectors are stored as base64 of their
IEEE-754 bytes (``{"f64": ...}``): exact, a third the size of decimal text, and cheap to encode.

Trust: the document lives in a ConfigMap that anyone who may edit ConfigMaps in the namespace
can change, so nothing in it is believed without checking it against the policy
(``problems_against``): a pending weight that is not a step, a step out of range, a weight that
is not that step's, an unknown phase. A document that fails is never acted on; the daemon
records a Warning Event and holds (see ``canaryd.daemon``).

Version 1 documents (written before this module) are read and upgraded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from canaryd.controller import Action, Phase, RolloutState
from canaryd.errors import CanarydError
from canaryd.jsonnum import is_packed_f64, pack_f64, unpack_f64
from canaryd.policy.model import CanaryPolicy
from canaryd.reasons import Reason

DOC_VERSION = 2
_PACK_MIN = 16
"""Float lists at least this long are packed as base64 (shorter ones stay readable)."""


class StateDocumentError(CanarydError):
    """A stored document the daemon cannot use (corrupt, unknown version, inconsistent)."""


@dataclass(frozen=True)
class Fingerprint:
    """Hashes of the parts of a policy that a rollout's stored state depends on.

    - ``judges``: the analysis (metrics, judges, tolerances, quantiles, alpha, source): the
      evidence was gathered under these; a change makes it meaningless.
    - ``steps``: the step weights, dwell and minimum requests.
    - ``routing``: the router settings (which object carries the traffic).
    """

    judges: str
    steps: str
    routing: str

    @classmethod
    def of(cls, policy: CanaryPolicy) -> Fingerprint:
        spec = policy.spec
        analysis = spec.analysis.model_dump(mode="json", by_alias=True)
        analysis.pop("interval", None)  # the interval only paces the analysis
        analysis.pop("history", None)  # read once at the start; evidence does not depend on it
        steps = [s.model_dump(mode="json", by_alias=True) for s in spec.steps.resolved()]
        routing = {
            "router": spec.router.model_dump(mode="json", by_alias=True),
            "component": spec.target.component,
        }
        return cls(_digest(analysis), _digest(steps), _digest(routing))

    def to_dict(self) -> dict[str, str]:
        return {"judges": self.judges, "steps": self.steps, "routing": self.routing}

    @classmethod
    def from_dict(cls, d: Any) -> Fingerprint | None:
        if not isinstance(d, dict):
            return None
        try:
            return cls(str(d["judges"]), str(d["steps"]), str(d["routing"]))
        except KeyError:
            return None

    def changes(self, other: Fingerprint) -> list[str]:
        """The parts that differ: a subset of ``judges``, ``steps``, ``routing``."""
        return [k for k in ("judges", "steps", "routing") if getattr(self, k) != getattr(other, k)]


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Pending:
    """A committed decision whose router change (and Event) may not have happened yet.

    Saved with the state *before* acting; re-applied after a restart (routers are idempotent,
    and the Event's name comes from ``key``, so it is recorded once).
    """

    action: Action
    weight: int
    key: str
    reason: Reason
    message: str
    mirror: float | None = None
    """The mirror share to set with it (0: off), for a policy with a shadow phase; None:
    leave the mirror alone."""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "action": self.action.value,
            "weight": self.weight,
            "key": self.key,
            "reason": self.reason.value,
            "message": self.message,
        }
        if self.mirror is not None:
            d["mirror"] = self.mirror
        return d

    @classmethod
    def from_dict(cls, d: Any, fallback_key: str) -> Pending:
        if not isinstance(d, dict):
            raise StateDocumentError(f"pending is not an object: {d!r}")
        try:
            action = Action(d["action"])
            weight = d["weight"]
            if isinstance(weight, bool) or not isinstance(weight, int):
                raise StateDocumentError(f"pending.weight is not an integer: {weight!r}")
            reason = Reason(d.get("reason") or _DEFAULT_REASON[action])
            mirror = d.get("mirror")
            if mirror is not None and (
                isinstance(mirror, bool) or not isinstance(mirror, int | float)
            ):
                raise StateDocumentError(f"pending.mirror is not a number: {mirror!r}")
        except (KeyError, ValueError) as exc:
            raise StateDocumentError(f"pending is malformed: {exc}") from None
        return cls(
            action,
            weight,
            str(d.get("key") or fallback_key),
            reason,
            str(d.get("message", "")),
            None if mirror is None else float(mirror),
        )


_DEFAULT_REASON = {
    Action.SET_MIRROR: Reason.SHADOW_STARTED,
    Action.SET_WEIGHT: Reason.WEIGHT_CHANGED,
    Action.PROMOTE: Reason.PROMOTED,
    Action.ROLLBACK: Reason.ROLLED_BACK,
}


@dataclass(frozen=True)
class StateDoc:
    """One rollout's persisted document (see the module docstring)."""

    state: RolloutState
    policy: str = ""
    fingerprint: Fingerprint | None = None
    target_uid: str = ""
    router: dict[str, Any] | None = None
    component: str = "predictor"
    window_end: float | None = None
    seq: int = 0
    pending: Pending | None = None
    last_decision: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None
    """The policy's clocks (interval, steps, noData timeout, maxDuration), for readers such as
    ``canaryd status`` that have the document but not the policy."""
    updated: str = ""

    # -- encoding ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": DOC_VERSION,
            "policy": {
                "name": self.policy,
                "fingerprint": None if self.fingerprint is None else self.fingerprint.to_dict(),
            },
            "target_uid": self.target_uid,
            "router": self.router or {},
            "component": self.component,
            "state": pack(self.state.to_dict()),
            "window_end": self.window_end,
            "seq": self.seq,
            "pending": None if self.pending is None else self.pending.to_dict(),
            "last_decision": self.last_decision,
            "limits": self.limits,
            "updated": self.updated,
        }

    @classmethod
    def from_dict(cls, d: Any) -> StateDoc:
        """Decode a stored document (v1 or v2); ``StateDocumentError`` saying what is wrong."""
        if not isinstance(d, dict):
            raise StateDocumentError("the state document is not a JSON object")
        version = d.get("version")
        if version not in (1, DOC_VERSION):
            raise StateDocumentError(
                f"unsupported state document version {version!r} (this canaryd reads 1 and "
                f"{DOC_VERSION})"
            )
        raw_state = d.get("state")
        if not isinstance(raw_state, dict):
            raise StateDocumentError("the state document has no 'state' object")
        try:
            state = RolloutState.from_dict(unpack(raw_state))
        except (KeyError, TypeError, ValueError) as exc:
            raise StateDocumentError(f"corrupt rollout state: {exc}") from None
        if version == 1:
            policy_name, fingerprint = str(d.get("policy", "")), None
            seq = len(state.history)
        else:
            meta = d.get("policy") or {}
            policy_name = str(meta.get("name", "")) if isinstance(meta, dict) else ""
            fingerprint = (
                Fingerprint.from_dict(meta.get("fingerprint")) if isinstance(meta, dict) else None
            )
            seq = d.get("seq", 0)
            if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
                raise StateDocumentError(f"seq is not a non-negative integer: {seq!r}")
        we = d.get("window_end")
        if we is not None and (isinstance(we, bool) or not isinstance(we, int | float)):
            raise StateDocumentError(f"window_end is not a number: {we!r}")
        pending_raw = d.get("pending")
        pending = (
            None
            if pending_raw is None
            else Pending.from_dict(
                pending_raw,
                decision_key(str(d.get("target_uid") or ""), state.canary_revision, seq),
            )
        )
        router = d.get("router")
        last = d.get("last_decision")
        return cls(
            state=state,
            policy=policy_name,
            fingerprint=fingerprint,
            target_uid=str(d.get("target_uid") or ""),
            router=dict(router) if isinstance(router, dict) else None,
            component=str(d.get("component") or "predictor"),
            window_end=None if we is None else float(we),
            seq=seq,
            pending=pending,
            last_decision=dict(last) if isinstance(last, dict) else None,
            limits=dict(d["limits"]) if isinstance(d.get("limits"), dict) else None,
            updated=str(d.get("updated", "")),
        )

    @classmethod
    def from_json(cls, text: str) -> StateDoc:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise StateDocumentError(f"the state document is not JSON: {exc}") from None
        return cls.from_dict(data)

    # -- trust ---------------------------------------------------------------------------

    def problems_against(self, policy: CanaryPolicy) -> list[str]:
        """Why this document must not move traffic under ``policy`` (empty: it may)."""
        out: list[str] = []
        st = self.state
        weights = [s.weight for s in policy.spec.steps.resolved()]
        if not st.canary_revision:
            out.append("the state names no canary revision")
        mirror = policy.spec.steps.mirror_percent()
        if st.phase is Phase.PENDING:
            if st.step != -1:
                out.append(f"a pending rollout is at step {st.step}")
        elif st.in_shadow:
            if policy.spec.steps.shadow is None:
                out.append("the state is in a shadow phase, but the policy has none")
            elif st.step != -1 or st.weight != 0:
                out.append(f"a shadow phase at step {st.step}, {st.weight}% (expected 0%)")
        elif st.phase in (Phase.PROGRESSING, Phase.PAUSED):
            if not 0 <= st.step < len(weights):
                out.append(f"step {st.step} is not a step of the policy (it has {len(weights)})")
            elif st.weight != weights[st.step]:
                out.append(f"weight {st.weight}% is not step {st.step + 1}'s {weights[st.step]}%")
        if self.pending is not None:
            p = self.pending
            allowed = {
                Action.SET_WEIGHT: set(weights),
                Action.SET_MIRROR: {0},
                Action.PROMOTE: {100},
                Action.ROLLBACK: {0},
            }.get(p.action)
            if allowed is None:
                out.append(f"pending action {p.action.value!r} does not move traffic")
            elif p.weight not in allowed:
                out.append(
                    f"pending {p.action.value} to {p.weight}% is not allowed by the policy "
                    f"(steps {weights})"
                )
            mirrors = {mirror} if p.action is Action.SET_MIRROR else {0.0}
            if p.mirror is not None and (
                policy.spec.steps.shadow is None or p.mirror not in mirrors
            ):
                out.append(
                    f"pending mirror of {p.mirror:g}% is not allowed by the policy (shadow "
                    f"mirrorPercent {mirror:g}%)"
                )
            if p.action is Action.SET_MIRROR and p.mirror is None:
                out.append("a pending set_mirror without a mirror share")
        return out


def decision_key(target_uid: str, canary_revision: str, seq: int) -> str:
    """The key of the ``seq``-th applied decision of the rollout of ``canary_revision`` on the
    InferenceService with ``target_uid`` (a model deleted and created again under its name is
    another rollout, whose Events are its own)."""
    return f"{target_uid[:13]}/{canary_revision}#{seq}"


# -- packing float vectors -----------------------------------------------------------------


def pack(value: Any) -> Any:
    """``value`` with every list of >= 16 floats replaced by ``{"f64": <base64>}``
    (``canaryd.jsonnum.pack_f64``; vectors the judges keep packed already pass through)."""
    if isinstance(value, dict):
        return {k: pack(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if len(value) >= _PACK_MIN and all(type(x) is float for x in value):
            return pack_f64(value)
        return [pack(v) for v in value]
    return value


def unpack(value: Any) -> Any:
    """The inverse of ``pack`` (exact: the same float64 values)."""
    if isinstance(value, dict):
        if is_packed_f64(value):
            return unpack_f64(value).tolist()
        return {k: unpack(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unpack(v) for v in value]
    return value
