"""CLI commands for the daemon: ``run``, the manual controls and ``status``.

The manual controls write the annotation ``canaryd.io/action`` on the InferenceService, so
Kubernetes RBAC (patch on inferenceservices) decides who may use them; the running daemon acts
on it at its next tick and removes it.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from canaryd.controller import Manual, UserImpact
from canaryd.errors import CanarydError, NotFoundError

KUBECONFIG = click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Kubeconfig file (default: in-cluster config, then ~/.kube/config).",
)


def _target(value: str) -> tuple[str, str]:
    ns, sep, name = value.partition("/")
    if not sep or not ns or not name or "/" in name:
        raise click.BadParameter(f"expected NAMESPACE/NAME, got {value!r}")
    return ns, name


@click.command("run")
@click.option(
    "--policies",
    "policies",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Policy file or directory (repeatable).",
)
@click.option("--prometheus", default=None, help="Prometheus URL (overrides the policies').")
@KUBECONFIG
@click.option(
    "--namespaces",
    default=None,
    help="Comma-separated namespaces to act in (default: $CANARYD_NAMESPACES, else all that "
    "policies name).",
)
@click.option("--port", type=int, default=8080, show_default=True, help="HTTP port (0: any).")
@click.option("--host", default="0.0.0.0", show_default=True, help="HTTP bind address.")
@click.option("--once", is_flag=True, help="Run one tick (every rollout due) and exit.")
@click.option("--tick", "tick_s", type=float, default=5.0, show_default=True, help="Seconds.")
@click.option(
    "--lease-namespace",
    default=None,
    help="Namespace of the leader Lease (default: $CANARYD_LEASE_NAMESPACE; none: no election).",
)
@click.option(
    "--settle",
    "settle_s",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds after a window's end before it is judged (its last scrapes land).",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Write a rollout's evidence at least every N windows (decisions are always written).",
)
@click.option(
    "--allow-cross-namespace",
    multiple=True,
    metavar="TARGET_NS=ROUTE_NS",
    help="Allow policies for models in TARGET_NS to drive routes in ROUTE_NS (repeatable).",
)
@click.option("--context", default=None, help="Kubeconfig context.")
@click.option(
    "--clock-offset",
    type=float,
    default=0.0,
    hidden=True,
    help="Drills and benchmarks: run the daemon this many seconds in the past (its analysis "
    "windows, decisions and timestamps), to act live on data recorded earlier.",
)
@click.option("--log-level", default="INFO", show_default=True)
def run_cmd(
    policies: tuple[Path, ...],
    prometheus: str | None,
    kubeconfig: Path | None,
    namespaces: str | None,
    port: int,
    host: str,
    once: bool,
    tick_s: float,
    lease_namespace: str | None,
    settle_s: float,
    checkpoint_every: int,
    allow_cross_namespace: tuple[str, ...],
    context: str | None,
    clock_offset: float,
    log_level: str,
) -> None:
    """Run the canary analysis daemon (one JSON log line per decision)."""
    import logging
    import time

    from canaryd.daemon import jsonlog
    from canaryd.daemon.run import Daemon, config_from_env, parse_cross_namespace

    jsonlog.configure(log_level.upper())
    try:
        config = config_from_env(
            policies=list(policies),
            prometheus=prometheus,
            kubeconfig=str(kubeconfig) if kubeconfig else None,
            context=context,
            namespaces=[n.strip() for n in namespaces.split(",") if n.strip()]
            if namespaces
            else None,
            port=port,
            host=host,
            once=once,
            tick_s=tick_s,
            lease_namespace=lease_namespace,
            settle_s=settle_s,
            checkpoint_every=checkpoint_every,
            cross_namespace=parse_cross_namespace(allow_cross_namespace),
            clock=(lambda: time.time() - clock_offset) if clock_offset else time.time,
        )
        if config.lease_namespace is None and not once:
            logging.getLogger("canaryd.run").warning(
                "no lease namespace: leader election is off; run a single replica"
            )
        daemon = Daemon(config)
        sys.exit(daemon.run_once() if once else daemon.run_forever())
    except CanarydError as exc:
        click.echo(f"canaryd run: {exc}", err=True)
        sys.exit(3)


def annotate(api_client: Any, namespace: str, name: str, action: Manual) -> bool:
    """Set ``canaryd.io/action`` on the InferenceService; returns whether it wrote."""
    from canaryd.daemon.manual import request_action
    from canaryd.identity import RolloutKey
    from canaryd.kube import KubeObjects

    return request_action(KubeObjects(api_client), RolloutKey(namespace, name), action)


def _manual_command(action: Manual) -> click.Command:
    @click.command(action.value, help=f"Ask canaryd to {action.value} NAMESPACE/NAME's rollout.")
    @click.argument("target")
    @KUBECONFIG
    def cmd(target: str, kubeconfig: Path | None) -> None:
        from canaryd.kube import load_api_client

        ns, name = _target(target)
        api = load_api_client(str(kubeconfig) if kubeconfig else None)
        try:
            annotate(api, ns, name, action)
        except CanarydError as exc:
            click.echo(f"canaryd {action.value}: {exc}", err=True)
            sys.exit(1)
        finally:
            api.close()
        click.echo(
            f"{ns}/{name}: canaryd.io/action={action.value} set; canaryd acts on it at its "
            "next tick and removes the annotation"
        )

    cmd.__doc__ = f"Ask canaryd to {action.value} NAMESPACE/NAME's rollout."
    return cmd


promote_cmd = _manual_command(Manual.PROMOTE)
rollback_cmd = _manual_command(Manual.ROLLBACK)
pause_cmd = _manual_command(Manual.PAUSE)
resume_cmd = _manual_command(Manual.RESUME)


def rollout_status(api_client: Any, namespace: str, name: str) -> dict[str, Any]:
    """The stored rollout state (from the ConfigMap) and the live router status."""
    from canaryd.identity import RolloutKey
    from canaryd.kube import KubeObjects
    from canaryd.policy.model import Router
    from canaryd.routing.factory import build_router
    from canaryd.state.document import StateDoc
    from canaryd.state.kubernetes import KubernetesStateStore

    key = RolloutKey(namespace, name)
    objects = KubeObjects(api_client)
    store = KubernetesStateStore(objects)
    stored = store.load(key)
    out: dict[str, Any] = {"rollout": str(key), "state_configmap": store.name_for(key)}
    router_spec = Router()
    component = "predictor"
    if stored is None:
        out["state"] = None
    else:
        doc = StateDoc.from_dict(stored.data)
        st = doc.state
        router_spec = Router.model_validate(doc.router) if doc.router else Router()
        component = doc.component
        out["policy"] = doc.policy
        out["state"] = {
            "phase": st.phase.value,
            "step": st.step,
            "weight": st.weight,
            "stable_revision": st.stable_revision,
            "canary_revision": st.canary_revision,
            "reason": st.reason,
            "started_at": st.started_at,
            "canary_requests": st.canary_requests,
            "canary_errors": st.canary_errors,
            "impact": st.impact.to_dict(),
            "intervals": st.intervals,
            "no_data_intervals": st.no_data_intervals,
            "updated": doc.updated,
            "pending": None if doc.pending is None else doc.pending.to_dict(),
        }
        out["last_decision"] = doc.last_decision
    try:
        router = build_router(objects, namespace, name, component, router_spec)
        ts = router.status()
        out["router"] = {
            "type": router_spec.type,
            "stable_revision": ts.stable_revision,
            "canary_revision": ts.canary_revision,
            "canary_percent": ts.canary_percent,
            "ready": ts.ready,
            "mirror_percent": ts.mirror_percent,
            "message": ts.message,
        }
    except NotFoundError as exc:
        out["router"] = {"error": str(exc)}
    return out


def _fmt_time(t: Any) -> str:
    if not isinstance(t, int | float):
        return "-"
    if t > 1e9:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
    return f"t={t:g}s"


@click.command("status")
@click.argument("target")
@KUBECONFIG
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_cmd(target: str, kubeconfig: Path | None, as_json: bool) -> None:
    """Show NAMESPACE/NAME's rollout: phase, step, weight, last reason, the judges' verdicts."""
    from canaryd.kube import load_api_client

    ns, name = _target(target)
    api = load_api_client(str(kubeconfig) if kubeconfig else None)
    try:
        info = rollout_status(api, ns, name)
    except CanarydError as exc:
        click.echo(f"canaryd status: {exc}", err=True)
        sys.exit(1)
    finally:
        api.close()
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True, default=str))
        return
    click.echo(f"rollout    {info['rollout']}  (state in ConfigMap {info['state_configmap']})")
    st = info.get("state")
    if st is None:
        click.echo("state      none: canaryd has not started a rollout here")
    else:
        click.echo(f"policy     {info.get('policy') or '-'}")
        click.echo(
            f"phase      {st['phase']}  step {st['step']}  weight {st['weight']}%  "
            f"({st['stable_revision']} -> {st['canary_revision']})"
        )
        click.echo(f"started    {_fmt_time(st['started_at'])}   updated {st['updated'] or '-'}")
        click.echo(
            f"canary     {st['canary_requests']:.0f} requests, {st['canary_errors']:.0f} errors, "
            f"{st['intervals']} intervals ({st['no_data_intervals']} without data)"
        )
        click.echo(f"impact     {UserImpact(**st['impact']).summary()}")
        click.echo(f"reason     {st['reason']}")
        last = info.get("last_decision") or {}
        if last:
            click.echo(
                f"last       {last.get('action')} at {_fmt_time(last.get('t'))}: "
                f"{last.get('reason')}"
            )
            for v in last.get("verdicts") or []:
                click.echo(f"  verdict  {v}")
    r = info.get("router") or {}
    if "error" in r:
        click.echo(f"router     {r['error']}")
        sys.exit(1)
    pct = r.get("canary_percent")
    click.echo(
        f"router     {r.get('type')}: stable {r.get('stable_revision')}, canary "
        f"{r.get('canary_revision') or '-'} at {'unset' if pct is None else f'{pct}%'}, "
        f"ready={r.get('ready')}; {r.get('message')}"
    )
