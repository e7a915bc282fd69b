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
from canaryd.errors import CanarydError

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
@click.option(
    "--prometheus",
    default=None,
    help="Default Prometheus URL (else $CANARYD_PROMETHEUS_URL); a policy's "
    "spec.analysis.source.prometheus overrides it.",
)
@click.option(
    "--prometheus-bearer-token-file",
    default=None,
    help="File with a bearer token, re-read when it changes "
    "($CANARYD_PROMETHEUS_BEARER_TOKEN_FILE).",
)
@click.option(
    "--prometheus-username", default=None, help="Basic auth user ($CANARYD_PROMETHEUS_USERNAME)."
)
@click.option(
    "--prometheus-password-file",
    default=None,
    help="Basic auth password file ($CANARYD_PROMETHEUS_PASSWORD_FILE).",
)
@click.option(
    "--prometheus-header",
    "prometheus_headers",
    multiple=True,
    help="Extra header 'Name: value', e.g. 'X-Scope-OrgID: team-a' (repeatable; "
    "$CANARYD_PROMETHEUS_HEADERS, one per line).",
)
@click.option(
    "--prometheus-ca-file", default=None, help="CA bundle (PEM) ($CANARYD_PROMETHEUS_CA_FILE)."
)
@click.option(
    "--prometheus-cert-file",
    default=None,
    help="Client certificate (PEM) ($CANARYD_PROMETHEUS_CERT_FILE).",
)
@click.option(
    "--prometheus-key-file",
    default=None,
    help="Client certificate key (PEM) ($CANARYD_PROMETHEUS_KEY_FILE).",
)
@click.option(
    "--prometheus-insecure-skip-verify",
    is_flag=True,
    default=None,
    help="Do not verify the server certificate ($CANARYD_PROMETHEUS_INSECURE_SKIP_VERIFY).",
)
@click.option(
    "--credentials-dir",
    default=None,
    help="Directory that policies' credential file names are relative to "
    "($CANARYD_CREDENTIALS_DIR, default /etc/canaryd/credentials).",
)
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
    "--lease-duration",
    "lease_duration_s",
    type=click.FloatRange(2.0, 300.0),
    default=15.0,
    show_default=True,
    help="Seconds a Lease holds without renewal; it is renewed every third of that.",
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
    prometheus_bearer_token_file: str | None,
    prometheus_username: str | None,
    prometheus_password_file: str | None,
    prometheus_headers: tuple[str, ...],
    prometheus_ca_file: str | None,
    prometheus_cert_file: str | None,
    prometheus_key_file: str | None,
    prometheus_insecure_skip_verify: bool | None,
    credentials_dir: str | None,
    kubeconfig: Path | None,
    namespaces: str | None,
    port: int,
    host: str,
    once: bool,
    tick_s: float,
    lease_namespace: str | None,
    lease_duration_s: float,
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
    from canaryd.daemon.run import Daemon, StartupError, config_from_env, parse_cross_namespace
    from canaryd.metrics.connection import PrometheusDefaults

    jsonlog.configure(log_level.upper())
    try:
        try:
            access = PrometheusDefaults.from_settings(
                url=prometheus,
                bearer_token_file=prometheus_bearer_token_file,
                username=prometheus_username,
                password_file=prometheus_password_file,
                headers=prometheus_headers,
                ca_file=prometheus_ca_file,
                cert_file=prometheus_cert_file,
                key_file=prometheus_key_file,
                insecure_skip_verify=prometheus_insecure_skip_verify,
                credentials_dir=credentials_dir,
            )
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        config = config_from_env(
            policies=list(policies),
            prometheus=access.url,
            prometheus_access=access,
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
            lease_duration_s=lease_duration_s,
            renew_period_s=lease_duration_s / 3.0,
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


def kube_options(fn: Any) -> Any:
    """kubectl's connection flags: --kubeconfig, --context, -n/--namespace, --debug."""
    fn = click.option(
        "--debug", is_flag=True, help="Show the traceback of an error instead of one line."
    )(fn)
    fn = click.option(
        "-n", "--namespace", default=None, help="Namespace (default: the context's, then default)."
    )(fn)
    fn = click.option("--context", default=None, help="Kubeconfig context to use.")(fn)
    fn = KUBECONFIG(fn)
    return fn


class _Kube:
    """The client a CLI command uses, with kubectl's rules and one-line errors."""

    def __init__(self, command: str, kubeconfig: Path | None, context: str | None, debug: bool):
        self.command, self.kubeconfig, self.context, self.debug = (
            command,
            str(kubeconfig) if kubeconfig else None,
            context,
            debug,
        )

    def client(self) -> Any:
        from canaryd.kube import load_api_client

        return load_api_client(self.kubeconfig, self.context)

    def namespace(self, given: str | None) -> str:
        from canaryd.kube.client import current_namespace

        return given or current_namespace(self.kubeconfig, self.context)

    def fail(self, exc: Exception) -> None:
        """Report ``exc`` in one line and exit: 3 for a configuration error, 1 otherwise."""
        from canaryd.kube import KubeConfigError

        if self.debug:
            raise exc
        click.echo(f"canaryd {self.command}: {exc}", err=True)
        sys.exit(3 if isinstance(exc, KubeConfigError) else 1)


def _key(target: str, namespace: str | None, kube: _Kube) -> tuple[str, str]:
    """``NAME`` (in -n or the context's namespace) or ``NAMESPACE/NAME``."""
    if "/" in target:
        ns, name = _target(target)
        if namespace and namespace != ns:
            raise click.BadParameter(f"{target!r} names namespace {ns}, but -n says {namespace}")
        return ns, name
    if not target:
        raise click.BadParameter("expected NAME or NAMESPACE/NAME")
    return kube.namespace(namespace), target


def _manual_command(action: Manual) -> click.Command:
    @click.command(action.value)
    @click.argument("target")
    @kube_options
    def cmd(
        target: str,
        kubeconfig: Path | None,
        context: str | None,
        namespace: str | None,
        debug: bool,
    ) -> None:
        kube = _Kube(action.value, kubeconfig, context, debug)
        try:
            ns, name = _key(target, namespace, kube)
            api = kube.client()
        except CanarydError as exc:
            kube.fail(exc)
            return
        try:
            annotate(api, ns, name, action)
        except CanarydError as exc:
            kube.fail(exc)
        finally:
            api.close()
        click.echo(
            f"{ns}/{name}: canaryd.io/action={action.value} set; canaryd acts on it at its "
            "next tick and removes the annotation"
        )

    cmd.help = (
        f"Ask canaryd to {action.value} the rollout of InferenceService NAME (or NAMESPACE/NAME)."
    )
    return cmd


promote_cmd = _manual_command(Manual.PROMOTE)
rollback_cmd = _manual_command(Manual.ROLLBACK)
pause_cmd = _manual_command(Manual.PAUSE)
resume_cmd = _manual_command(Manual.RESUME)


def rollout_status(api_client: Any, namespace: str, name: str) -> dict[str, Any]:
    """The stored rollout state and the live router status, JSON-ready."""
    from canaryd.daemon.status import view
    from canaryd.identity import RolloutKey

    return view(api_client, RolloutKey(namespace, name)).to_dict()


def _detail(info: dict[str, Any]) -> str:
    lines = [f"rollout    {info['rollout']}  (state in ConfigMap {info['state_configmap']})"]
    st = info.get("state")
    if info.get("problem"):
        lines.append(f"problem    {info['problem']}")
    if st is None:
        if not info.get("problem"):
            lines.append("state      none: canaryd has not started a rollout here")
    else:
        step = "-" if st["step"] is None else f"{st['step']} of {st['steps'] or '?'}"
        lines += [
            f"policy     {info.get('policy') or '-'}",
            f"phase      {st['phase']}  step {step}  weight {st['weight']}%  "
            f"({st['stable_revision']} -> {st['canary_revision']})",
            f"started    {_fmt_time(st['started_at'])} ({st['age']} ago)   updated "
            f"{st['updated'] or '-'}",
            f"canary     {st['canary_requests']:.0f} requests, {st['canary_errors']:.0f} errors, "
            f"{st['intervals']} windows ({st['no_data_intervals']} without data)",
            f"impact     {UserImpact(**st['impact']).summary()}",
            f"reason     {st['reason']}",
            f"next       {st['next']}",
        ]
        last = info.get("last_decision") or {}
        if last:
            lines.append(
                f"last       {last.get('action')} at {_fmt_time(last.get('t'))}: "
                f"{last.get('reason')}"
            )
            for v in last.get("summaries") or []:
                lines.append(f"  verdict  {v}")
        for h in st.get("history") or []:
            lines.append(f"history    {_fmt_time(h['t'])}  {h['weight']:>3}%  {h['reason']}")
    r = info.get("router") or {}
    if "error" in r:
        lines.append(f"router     {r.get('type')}: {r['error']}")
    else:
        pct = r.get("canary_percent")
        lines.append(
            f"router     {r.get('type')}: stable {r.get('stable_revision')}, canary "
            f"{r.get('canary_revision') or '-'} at {'unset' if pct is None else f'{pct}%'}, "
            f"ready={r.get('ready')}; {r.get('message')}"
        )
    return "\n".join(lines)


def _fmt_time(t: Any) -> str:
    if not isinstance(t, int | float):
        return "-"
    if t > 1e9:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
    return f"t={t:g}s"


def _render(data: Any, output: str) -> str:
    if output == "yaml":
        import yaml

        return yaml.safe_dump(data, sort_keys=True, default_flow_style=False).rstrip()
    return json.dumps(data, indent=2, sort_keys=True, default=str)


@click.command("status")
@click.argument("target", required=False)
@kube_options
@click.option("-A", "--all-namespaces", is_flag=True, help="List the rollouts of every namespace.")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
    help="Output format (json and yaml carry structured verdicts).",
)
@click.option("--json", "as_json", is_flag=True, hidden=True, help="Same as -o json.")
@click.option("-w", "--watch", is_flag=True, help="Print again whenever something changes.")
@click.option("--interval", type=float, default=2.0, hidden=True, help="Watch poll seconds.")
def status_cmd(
    target: str | None,
    kubeconfig: Path | None,
    context: str | None,
    namespace: str | None,
    debug: bool,
    all_namespaces: bool,
    output: str,
    as_json: bool,
    watch: bool,
    interval: float,
) -> None:
    """Rollouts: without NAME every rollout of the namespace (-A: of all), like kubectl get;
    with NAME (or NAMESPACE/NAME) one rollout in detail: phase, step, weight, the last decision,
    the judges' verdicts, what comes next, and the live traffic split."""
    import time

    from canaryd.daemon.status import list_views, table, view
    from canaryd.identity import RolloutKey

    output = "json" if as_json else output
    kube = _Kube("status", kubeconfig, context, debug)
    try:
        if target is not None and all_namespaces:
            raise click.BadParameter("give NAME or -A, not both")
        key = RolloutKey(*_key(target, namespace, kube)) if target is not None else None
        ns = None if all_namespaces else kube.namespace(namespace)
        api = kube.client()
    except CanarydError as exc:
        kube.fail(exc)
        return
    last = None
    try:
        while True:
            try:
                if key is not None:
                    info = view(api, key).to_dict()
                    text = _render(info, output) if output != "table" else _detail(info)
                    router_error = "error" in (info.get("router") or {})
                else:
                    views = list_views(api, ns)
                    if output != "table":
                        text = _render({"items": [v.to_dict() for v in views]}, output)
                    elif views:
                        text = table(views, all_namespaces=all_namespaces)
                    else:
                        where = "any namespace" if all_namespaces else f"namespace {ns}"
                        text = f"No rollouts in {where}."
                    router_error = False
            except CanarydError as exc:
                kube.fail(exc)
                return
            if text != last:
                click.echo(text)
                if watch:
                    click.echo("")
                last = text
            if not watch:
                if router_error:
                    sys.exit(1)
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        api.close()
