"""Where the Prometheus URL and credentials come from, and who gets which credentials.

No server is needed here: these are the resolution rules (``PrometheusDefaults``), the
credentials files (``Credentials``), redaction, and ``canaryd run`` refusing to start. The
same paths against real servers are in tests/integration/prometheus/test_connection.py.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from canaryd.cli import main
from canaryd.metrics.connection import (
    AuthConfig,
    Credentials,
    PrometheusConfig,
    PrometheusDefaults,
    TlsConfig,
)
from canaryd.outbound import OutboundError, check_url, redact
from canaryd.policy.model import Source

DAEMON = "https://prometheus.monitoring.svc:9090"


def src(**kw: object) -> Source:
    return Source.model_validate({"preset": "istio", **kw})


def defaults(tmp_path: Path, **kw: object) -> PrometheusDefaults:
    return PrometheusDefaults.from_settings(env={}, credentials_dir=str(tmp_path), **kw)  # type: ignore[arg-type]


def test_the_policy_url_overrides_the_daemon_default(tmp_path: Path) -> None:
    d = defaults(tmp_path, url=DAEMON)
    assert d.resolve(src()).url == DAEMON  # type: ignore[union-attr]
    assert d.resolve(src(prometheus="http://other:9090")).url == "http://other:9090"  # type: ignore[union-attr]
    assert defaults(tmp_path).resolve(src()) is None


def test_flags_override_the_environment() -> None:
    env = {
        "CANARYD_PROMETHEUS_URL": "http://from-env:9090",
        "CANARYD_PROMETHEUS_USERNAME": "env-user",
        "CANARYD_PROMETHEUS_PASSWORD_FILE": "/env/password",
        "CANARYD_PROMETHEUS_HEADERS": "X-Scope-OrgID: team-a\nX-Extra: 1\n",
        "CANARYD_PROMETHEUS_INSECURE_SKIP_VERIFY": "true",
    }
    from_env = PrometheusDefaults.from_settings(env=env)
    assert from_env.url == "http://from-env:9090"
    assert from_env.auth == AuthConfig(
        username="env-user",
        password_file=Path("/env/password"),
        headers=(("X-Scope-OrgID", "team-a"), ("X-Extra", "1")),
    )
    assert from_env.tls.insecure_skip_verify is True
    flags = PrometheusDefaults.from_settings(
        env=env, url="http://from-flag:9090", headers=["X-Scope-OrgID: team-b"]
    )
    assert flags.url == "http://from-flag:9090"
    assert flags.auth.headers == (("X-Scope-OrgID", "team-b"),)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"url": "prometheus:9090"}, "expected an http:// or https:// URL"),
        ({"url": "http://u:p@prom:9090"}, "credentials in the URL"),
        ({"headers": ["Authorization: Bearer x"]}, "carries credentials"),
        ({"headers": ["no colon"]}, "expected 'Name: value'"),
        ({"env": {"CANARYD_PROMETHEUS_INSECURE_SKIP_VERIFY": "maybe"}}, "expected true or false"),
    ],
)
def test_bad_settings_are_refused_with_what_was_expected(
    kw: dict[str, object], message: str
) -> None:
    kw.setdefault("env", {})
    with pytest.raises(ValueError, match=message):
        PrometheusDefaults.from_settings(**kw)  # type: ignore[arg-type]


def test_daemon_credentials_go_only_to_the_daemon_origin(tmp_path: Path) -> None:
    d = defaults(
        tmp_path,
        url=DAEMON,
        bearer_token_file="/var/run/secrets/token",
        headers=["X-Scope-OrgID: platform"],
        ca_file="/etc/ca.crt",
    )
    same = d.resolve(src(prometheus=DAEMON + "/"))
    assert same is not None and same.auth == d.auth and same.tls == d.tls
    other = d.resolve(src(prometheus="https://attacker.example:9090"))
    assert other is not None
    assert other.auth == AuthConfig() and other.tls == TlsConfig()
    # Same host, another port: another origin.
    assert d.resolve(src(prometheus="https://prometheus.monitoring.svc:9091")).auth == AuthConfig()  # type: ignore[union-attr]


def test_policy_auth_refines_the_daemon_settings_on_its_origin(tmp_path: Path) -> None:
    d = defaults(
        tmp_path,
        url=DAEMON,
        bearer_token_file="/daemon/token",
        headers=["X-Scope-OrgID: a", "X-K: 1"],
    )
    got = d.resolve(
        src(
            auth={
                "basicAuth": {"username": "team-b", "passwordFile": "team-b/password"},
                "headers": {"x-scope-orgid": "b"},
            },
            tls={"caFile": "team-b/ca.crt"},
        )
    )
    assert got is not None
    assert got.auth.bearer_token_file is None
    assert got.auth.username == "team-b"
    assert got.auth.password_file == (tmp_path / "team-b" / "password").resolve()
    assert dict(got.auth.headers) == {"X-K": "1", "x-scope-orgid": "b"}
    assert got.tls.ca_file == (tmp_path / "team-b" / "ca.crt").resolve()


def test_policy_files_cannot_leave_the_credentials_directory(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    outside = tmp_path / "sa-token"
    outside.write_text("service account token")
    os.symlink(outside, creds / "link")
    d = PrometheusDefaults(url=DAEMON, credentials_dir=creds)
    with pytest.raises(ValueError, match="resolves outside the credentials directory"):
        d.resolve(src(auth={"bearerTokenFile": "link"}))
    # The model refuses absolute paths and '..' before that.
    for bad in ("/var/run/secrets/kubernetes.io/serviceaccount/token", "../sa-token", "a/../../b"):
        with pytest.raises(ValueError, match="relative to the daemon's credentials directory"):
            src(auth={"bearerTokenFile": bad})


def test_credentials_reread_a_changed_token_and_build_basic_auth(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    c = Credentials(
        AuthConfig(bearer_token_file=token, headers=(("X-Scope-OrgID", "t"),)), TlsConfig()
    )
    assert c.headers() == {"X-Scope-OrgID": "t", "Authorization": "Bearer one"}
    token.write_text("two-longer\n")
    assert c.headers()["Authorization"] == "Bearer two-longer"
    token.write_text("")
    with pytest.raises(OutboundError, match="is empty"):
        c.headers()
    pw = tmp_path / "pw"
    pw.write_text("s3cret: with spaces \n")
    basic = Credentials(AuthConfig(username="u", password_file=pw), TlsConfig()).headers()
    assert basic["Authorization"] == "Basic " + base64.b64encode(b"u:s3cret: with spaces ").decode()


def test_redact_removes_credentials_and_cuts() -> None:
    text = (
        "error: password=hunter2 token: abc Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload"
        " key AKIAIOSFODNN7EXAMPLE url http://user:pw@host/x \x00\x1b[31m"
    )
    out = redact(text, 500)
    for leak in (
        "hunter2",
        "abc ",
        "eyJhbGciOiJIUzI1NiJ9",
        "AKIAIOSFODNN7EXAMPLE",
        "user:pw",
        "\x1b",
    ):
        assert leak not in out
    assert "password=<redacted>" in out and "http://<redacted>@host/x" in out
    assert redact("x" * 20 + " y" * 300, 50).endswith("…")
    assert len(redact("word " * 100, 50)) <= 50


def test_check_url() -> None:
    assert check_url("https://p:9090/prefix") is None
    assert check_url("ftp://p") is not None
    assert check_url("http://:9090") == "the URL has no host"


def test_config_problems_name_the_file(tmp_path: Path) -> None:
    cfg = PrometheusConfig("http://p:9090", tls=TlsConfig(ca_file=tmp_path / "ca.crt"))
    assert cfg.problems() == [
        "TLS files are set but the URL is not https://",
        f"cannot read {tmp_path / 'ca.crt'}: No such file or directory",
    ]


# -- canaryd run refuses to start --------------------------------------------------------------

POLICY = """\
apiVersion: canaryd.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: {name}}}
spec:
  target: {{namespace: models, inferenceService: {name}}}
  analysis:
    source: {source}
"""


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    clean = {k: "" for k in PrometheusDefaults.ENV.values()}
    result = CliRunner().invoke(main, ["run", *args], env={**clean, **(env or {})})
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result.exit_code, result.stderr


def test_run_refuses_a_policy_without_prometheus(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(POLICY.format(name="a", source="{preset: istio}"))
    (tmp_path / "b.yaml").write_text(
        POLICY.format(name="b", source="{preset: istio, prometheus: 'http://p:9090'}")
    )
    code, err = run(["--policies", str(tmp_path), "--once"])
    assert code == 3
    assert [line for line in err.splitlines() if not line.startswith("{")] == [
        f"canaryd run: policy 'a' ({tmp_path / 'a.yaml'}): no Prometheus to read: set "
        "spec.analysis.source.prometheus, or the daemon's --prometheus / $CANARYD_PROMETHEUS_URL"
    ]
    assert "Traceback" not in err


def test_run_refuses_unreadable_credentials(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(POLICY.format(name="a", source="{preset: istio}"))
    code, err = run(
        ["--policies", str(tmp_path), "--once", "--prometheus-username", "u"],
        env={
            "CANARYD_PROMETHEUS_URL": "http://p:9090",
            "CANARYD_PROMETHEUS_PASSWORD_FILE": str(tmp_path / "missing"),
        },
    )
    assert code == 3
    assert [line for line in err.splitlines() if not line.startswith("{")] == [
        f"canaryd run: Prometheus settings: cannot read {tmp_path / 'missing'}: No such file or "
        "directory"
    ]


def test_run_refuses_a_bad_url_flag(tmp_path: Path) -> None:
    code, err = run(["--policies", str(tmp_path), "--prometheus", "prometheus:9090"])
    assert code == 3
    assert err.strip() == (
        "canaryd run: Prometheus URL: expected an http:// or https:// URL, got 'prometheus:9090'"
    )
