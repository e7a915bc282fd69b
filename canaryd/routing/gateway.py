"""Gateway API router: the weights of two backendRefs in one rule of a user-owned HTTPRoute.

Set-up: two Services (the stable and the canary InferenceService's, e.g. KServe Standard
mode's ``<isvc>-predictor``) behind an ``HTTPRoute`` (``gateway.networking.k8s.io/v1``) that
the user owns. canaryd changes **only** the ``weight`` of the stable and the canary backendRef
of **one rule**, the rule the policy names (``rules[].name``, Gateway API >= 1.2, or its index).
Every other rule, every match, filter, timeout, parentRef and every other field stays as it is:
the write is a JSON merge patch of exactly the two weights (``spec.rules`` is a list, so the
patch carries the whole list, as read, under the object's resourceVersion: a concurrent edit
makes it fail with 409, and the router re-reads and decides again).

The chosen rule must hold exactly two backendRefs: one matching the stable and one matching
the canary Service (name; port and namespace when the policy gives them; group ``""`` and
kind ``Service``, the API's defaults). Anything else is a ``RoutingError``: canaryd does not
guess which backends a split is between.

**Weights are relative** (int32, 0..1,000,000, default 1; they need not sum to 100). The
canary's share is ``canary / (stable + canary)``; ``status()`` reports it to the nearest
percent (never 0 while the canary has a non-zero weight, never 100 while stable has), the raw
weights in ``message``. A write of ``p`` percent leaves the weights alone when they already
express ``p`` % exactly (``900/100`` is 10 %), and otherwise writes ``100 - p`` and ``p``.
Promotion is ``0/100`` onto the canary backend, rollback ``100/0``.

**Refused routes.** A route with an ownerReference that is a controller (``controller:
true``), or one from KServe or Knative, would have canaryd's weights overwritten: every write is
refused. A route whose ``status.parents[]`` do not all report ``Accepted=True`` (or that no
Gateway has reported on yet) moves no traffic: writes that send traffic *to* the canary
(a positive percent, promotion, a mirror) are refused; writes that take traffic away (rollback,
0 %, mirror off) still go through, so that the route is safe whenever it is accepted again.
``status().ready`` is false until every parent has Accepted the current generation and no
parent reports ``ResolvedRefs=False`` (a missing Service answers 500).

**Mirroring** (the shadow phase): ``set_mirror_percent(p)`` adds, on the chosen rule, a
``RequestMirror`` filter whose backendRef is the canary's (name, port, namespace as the rule
names it), with ``percent: p`` when ``p`` is whole and ``fraction: {numerator, denominator}``
otherwise; ``0`` removes that filter and no other (a user's mirror to another backend stays).
RequestMirror is "Extended" support in Gateway API: an implementation that lacks it reports the
route not Accepted, and canaryd then refuses to send traffic to the canary. Envoy-based
implementations append ``-shadow`` to the mirrored request's Host.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from kubernetes import client as k8s

from canaryd.errors import RoutingError
from canaryd.kube import (
    HTTP_ROUTE,
    JSON,
    Objects,
    Resource,
    as_objects,
    preferred_version,
    update_object,
)
from canaryd.routing.base import TrafficStatus, check_mirror_percent, check_percent

GROUP = "gateway.networking.k8s.io"
VERSIONS = ("v1", "v1beta1")
MAX_FILTERS = 16  # the CRD's maxItems for rules[].filters
FOREIGN_OWNER_GROUPS = frozenset(
    {"serving.kserve.io", "serving.knative.dev", "networking.internal.knative.dev"}
)


@dataclass(frozen=True)
class ServiceRef:
    """A Service as the policy names it; ``port``/``namespace`` None match any."""

    name: str
    port: int | None = None
    namespace: str | None = None

    def matches(self, ref: Any, route_namespace: str) -> bool:
        """Whether an HTTPRoute backendRef (JSON) points at this Service."""
        if not isinstance(ref, dict):
            return False
        if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service":
            return False
        if ref.get("name") != self.name:
            return False
        if self.port is not None and ref.get("port") != self.port:
            return False
        ns = ref.get("namespace") or route_namespace
        return ns == (self.namespace or route_namespace)

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"Service {where}{self.name}{port}"


@dataclass(frozen=True)
class _Rule:
    """The chosen rule and its two backendRefs (views into the object being read or mutated)."""

    index: int
    rule: JSON
    stable: JSON
    canary: JSON

    @property
    def label(self) -> str:
        return _label(self.index, self.rule)


class GatewayRouter:
    """A TrafficRouter over the weighted pair of backendRefs in one rule of one HTTPRoute."""

    can_mirror = True

    def __init__(
        self,
        objects: Objects | k8s.ApiClient,
        namespace: str,
        name: str,
        stable: ServiceRef,
        canary: ServiceRef,
        *,
        rule_name: str | None = None,
        rule_index: int | None = None,
        version: str | None = None,
    ) -> None:
        if (rule_name is None) == (rule_index is None):
            raise RoutingError("give exactly one of rule_name and rule_index")
        if stable == canary:
            raise RoutingError(f"stable and canary are the same backend: {stable}")
        self._objects = as_objects(objects)
        self.namespace = namespace
        self.name = name
        self.stable = stable
        self.canary = canary
        self.rule_name = rule_name
        self.rule_index = rule_index
        self._version = version

    def __repr__(self) -> str:
        rule = f"rule={self.rule_name!r}" if self.rule_name else f"rule_index={self.rule_index}"
        return (
            f"GatewayRouter({self.namespace}/{self.name}, {rule}, stable={self.stable.name}, "
            f"canary={self.canary.name})"
        )

    @property
    def what(self) -> str:
        return f"HTTPRoute {self.namespace}/{self.name}"

    @property
    def resource(self) -> Resource:
        """The HTTPRoute resource at the version the apiserver serves (v1 preferred)."""
        if self._version is None:
            self._version = preferred_version(self._objects, GROUP, VERSIONS)
        return HTTP_ROUTE.with_version(self._version)

    def get(self) -> JSON:
        """The HTTPRoute (from the watch cache when cached; ApiNotFoundError when absent)."""
        return self._objects.get(self.resource, self.namespace, self.name)

    def reads(self) -> list[tuple[Resource, str]]:
        return [(self.resource, self.namespace)]

    # -- reading -----------------------------------------------------------------------

    def status(self) -> TrafficStatus:
        obj = self.get()
        rule = self._rule(obj)
        ws, wc = _weight(rule.stable), _weight(rule.canary)
        exact = canary_share(ws, wc)
        accepted, why = acceptance(obj)
        generation = int((obj.get("metadata") or {}).get("generation") or 0)
        observed = observed_generation(obj, generation)
        resolved = unresolved_refs(obj)
        mirror = self._mirror_percent(rule)
        parts = [f"{self.what} {rule.label}: {self.stable.name}={ws}, {self.canary.name}={wc}"]
        if exact is None:
            parts.append("both weights are 0: the rule answers every request with HTTP 500")
        elif not float(exact).is_integer():
            parts.append(f"canary share {float(exact):.4g}%")
        if mirror:
            parts.append(f"mirroring {mirror:g}% to the canary")
        if not accepted:
            parts.append(why)
        if resolved:
            parts.append(resolved)
        if observed < generation:
            parts.append(f"generation {generation} not yet observed (at {observed})")
        return TrafficStatus(
            stable_revision=self.stable.name,
            canary_revision=self.canary.name,
            canary_percent=0 if exact is None else reported_percent(exact),
            ready=accepted and not resolved and observed >= generation and exact is not None,
            generation=generation,
            observed_generation=observed,
            message="; ".join(parts),
            mirror_percent=mirror,
        )

    # -- writing -----------------------------------------------------------------------

    def set_canary_percent(self, percent: int) -> None:
        self._set(check_percent(percent))

    def promote(self) -> None:
        self._set(100)

    def rollback(self) -> None:
        self._set(0)

    def set_mirror_percent(self, percent: float) -> None:
        p = check_mirror_percent(percent)

        def change(rule: _Rule) -> None:
            filters = rule.rule.get("filters") or []
            ours = [i for i, f in enumerate(filters) if self._is_our_mirror(f)]
            if p == 0:
                if ours:
                    kept = [f for i, f in enumerate(filters) if i not in ours]
                    if kept:
                        rule.rule["filters"] = kept
                    else:
                        rule.rule.pop("filters", None)
                return
            mirror = _mirror_share(p)
            if ours:
                body = filters[ours[0]].setdefault("requestMirror", {})
                body.pop("percent", None)
                body.pop("fraction", None)
                body.update(mirror)
                for i in reversed(ours[1:]):  # one mirror to the canary is enough
                    del filters[i]
                return
            if len(filters) >= MAX_FILTERS:
                raise RoutingError(
                    f"{self.what} {rule.label} already has {len(filters)} filters, the most the "
                    "API allows; no room for the RequestMirror filter"
                )
            target = {
                k: copy.deepcopy(v)
                for k, v in rule.canary.items()
                if k in ("group", "kind", "name", "namespace", "port")
            }
            filters.append(
                {"type": "RequestMirror", "requestMirror": {"backendRef": target, **mirror}}
            )
            rule.rule["filters"] = filters

        self._write(change, increases=p > 0)

    def _set(self, percent: int) -> None:
        def change(rule: _Rule) -> None:
            ws, wc = _weight(rule.stable), _weight(rule.canary)
            if expresses(ws, wc, percent):
                return  # already exactly this split: leave the user's numbers alone
            rule.stable["weight"] = 100 - percent
            rule.canary["weight"] = percent

        self._write(change, increases=percent > 0)

    def _write(self, change: Any, *, increases: bool) -> None:
        def mutate(obj: JSON) -> JSON:
            self._check_owner(obj)
            if increases:
                accepted, why = acceptance(obj)
                if not accepted:
                    raise RoutingError(
                        f"{self.what} is not accepted by its Gateway ({why}); a weight written "
                        "to a rejected route moves no traffic, so canaryd will not send traffic "
                        "to the canary through it"
                    )
            change(self._rule(obj))
            return obj

        update_object(self._objects, self.resource, self.namespace, self.name, mutate)

    # -- the rule ----------------------------------------------------------------------

    def _rule(self, obj: JSON) -> _Rule:
        rules = (obj.get("spec") or {}).get("rules") or []
        if self.rule_name is not None:
            found = [
                i
                for i, r in enumerate(rules)
                if isinstance(r, dict) and r.get("name") == self.rule_name
            ]
            if len(found) != 1:
                names = [r.get("name") for r in rules if isinstance(r, dict)]
                raise RoutingError(
                    f"{self.what}: expected one rule named {self.rule_name!r}, found "
                    f"{len(found)} (rule names: {names})"
                )
            index = found[0]
        else:
            assert self.rule_index is not None
            index = self.rule_index
            if not index < len(rules) or not isinstance(rules[index], dict):
                raise RoutingError(
                    f"{self.what} has {len(rules)} rules; there is no rules[{index}]"
                )
        rule = rules[index]
        refs = rule.get("backendRefs") or []
        stable = [i for i, r in enumerate(refs) if self.stable.matches(r, self.namespace)]
        canary = [i for i, r in enumerate(refs) if self.canary.matches(r, self.namespace)]
        if len(refs) != 2 or len(stable) != 1 or len(canary) != 1 or stable == canary:
            seen = ", ".join(_describe(r) for r in refs) or "none"
            raise RoutingError(
                f"{self.what} {_label(index, rule)}: expected exactly two backendRefs, {self.stable} and "
                f"{self.canary}; found {seen}"
            )
        return _Rule(index, rule, refs[stable[0]], refs[canary[0]])

    def _is_our_mirror(self, f: Any) -> bool:
        if not isinstance(f, dict) or f.get("type") != "RequestMirror":
            return False
        return self.canary.matches((f.get("requestMirror") or {}).get("backendRef"), self.namespace)

    def _mirror_percent(self, rule: _Rule) -> float:
        for f in rule.rule.get("filters") or []:
            if self._is_our_mirror(f):
                return mirror_share_of(f.get("requestMirror") or {})
        return 0.0

    def _check_owner(self, obj: JSON) -> None:
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
            group = str(ref.get("apiVersion", "")).split("/")[0]
            if ref.get("controller") is True or group in FOREIGN_OWNER_GROUPS:
                raise RoutingError(
                    f"{self.what} is owned by {ref.get('kind')} {ref.get('name')} "
                    f"({ref.get('apiVersion')}); its controller would overwrite canaryd's "
                    "weights. Put an HTTPRoute you own in front of the two Services instead."
                )


# -- pure helpers (unit-tested on their own) ---------------------------------------------


def _label(index: int, rule: JSON) -> str:
    name = rule.get("name")
    return f"rules[{index}]" + (f" ({name!r})" if name else "")


def _weight(ref: JSON) -> int:
    """A backendRef's weight; the API's default is 1."""
    w = ref.get("weight", 1)
    return int(w) if w is not None else 1


def _describe(ref: Any) -> str:
    if not isinstance(ref, dict):
        return repr(ref)
    kind = ref.get("kind", "Service")
    ns = f"{ref['namespace']}/" if ref.get("namespace") else ""
    port = f":{ref['port']}" if ref.get("port") is not None else ""
    return f"{kind} {ns}{ref.get('name')}{port} (weight {ref.get('weight', 1)})"


def canary_share(stable_weight: int, canary_weight: int) -> Fraction | None:
    """The canary's exact share in percent, or None when both weights are 0 (no traffic)."""
    total = stable_weight + canary_weight
    if total <= 0:
        return None
    return Fraction(100 * canary_weight, total)


def reported_percent(share: Fraction) -> int:
    """The share to the nearest percent, but 0 and 100 only when they are exact."""
    p = round(share)
    if p == 0 and share > 0:
        return 1
    if p == 100 and share < 100:
        return 99
    return int(p)


def expresses(stable_weight: int, canary_weight: int, percent: int) -> bool:
    """Whether the weights already split exactly ``percent`` % to the canary."""
    share = canary_share(stable_weight, canary_weight)
    return share is not None and share == percent


def _mirror_share(percent: float) -> JSON:
    """The RequestMirror body for ``percent``: ``percent`` if whole, else ``fraction``."""
    if float(percent).is_integer():
        return {"percent": int(percent)}
    f = Fraction(round(percent * 100), 100 * 100)
    return {"fraction": {"numerator": f.numerator, "denominator": f.denominator}}


def mirror_share_of(body: JSON) -> float:
    """The percent a RequestMirror filter mirrors (percent, fraction, or 100 when neither)."""
    if body.get("percent") is not None:
        return float(body["percent"])
    fraction = body.get("fraction")
    if isinstance(fraction, dict):
        den = fraction.get("denominator", 100) or 100
        value = 100.0 * float(fraction.get("numerator", 0)) / float(den)
        return round(value, 6) if math.isfinite(value) else 0.0
    return 100.0


def _condition(conditions: Any, kind: str) -> JSON | None:
    for c in conditions or []:
        if isinstance(c, dict) and c.get("type") == kind:
            return c
    return None


def acceptance(obj: JSON) -> tuple[bool, str]:
    """Whether every parent in ``status.parents`` has Accepted the route, and why not."""
    parents = (obj.get("status") or {}).get("parents") or []
    if not parents:
        return False, "no Gateway has reported on it yet (status.parents is empty)"
    problems = []
    for p in parents:
        ref = p.get("parentRef") or {}
        cond = _condition(p.get("conditions"), "Accepted")
        if cond is None or cond.get("status") != "True":
            state = "no Accepted condition" if cond is None else f"Accepted={cond.get('status')}"
            detail = "" if cond is None else f" ({cond.get('reason')}: {cond.get('message', '')})"
            problems.append(f"parent {ref.get('name')!r}: {state}{detail}")
    return not problems, "; ".join(problems)


def observed_generation(obj: JSON, generation: int) -> int:
    """The oldest generation any parent's Accepted condition was computed for."""
    seen = []
    for p in (obj.get("status") or {}).get("parents") or []:
        cond = _condition(p.get("conditions"), "Accepted")
        if cond is not None and cond.get("observedGeneration") is not None:
            seen.append(int(cond["observedGeneration"]))
    return min(seen) if seen else generation


def unresolved_refs(obj: JSON) -> str:
    """The parents' ``ResolvedRefs=False`` messages (a backend that does not exist), or ''."""
    out = []
    for p in (obj.get("status") or {}).get("parents") or []:
        cond = _condition(p.get("conditions"), "ResolvedRefs")
        if cond is not None and cond.get("status") == "False":
            out.append(f"ResolvedRefs=False ({cond.get('reason')}: {cond.get('message', '')})")
    return "; ".join(out)
