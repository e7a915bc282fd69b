"""How canaryd reaches a Prometheus: its URL, credentials, TLS, method and retry budget.

``PrometheusConfig`` is everything a ``PrometheusSource`` needs to know about one server and
how hard to try; ``RetryPolicy`` bounds the time one fetch may spend on it. ``AuthConfig`` and
``TlsConfig`` name files, never secrets: ``Credentials`` reads them at request time (a bearer
token or password file is re-read when it changes, as ServiceAccount tokens rotate; the TLS
context is rebuilt when a CA, certificate or key file changes).

Where the URL comes from (``PrometheusDefaults.resolve``), first match wins:

1. the policy's ``spec.analysis.source.prometheus``;
2. the daemon's default: ``--prometheus``, else ``$CANARYD_PROMETHEUS_URL``.

A policy with neither has no Prometheus to read; ``canaryd run`` refuses to start with it.

Which credentials are sent: the daemon's own (flags / ``CANARYD_PROMETHEUS_*`` files) go **only
to the daemon's origin** (scheme, host and port of its default URL), so a policy that names some
other server can never receive them. A policy's ``source.auth`` / ``source.tls`` refine the
daemon's settings on the daemon's origin (a policy's bearer token or basic auth replaces the
daemon's; its headers are added, a policy header replacing a daemon header of the same name)
and are the only settings for any other origin. A policy's files are names relative to the
daemon's credentials directory (``--credentials-dir``, ``$CANARYD_CREDENTIALS_DIR``, default
``/etc/canaryd/credentials``), and must resolve inside it: a policy cannot make canaryd send
an arbitrary file of its pod (the ServiceAccount token, say) to a server of its choice.
"""

from __future__ import annotations

import base64
import os
import ssl
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

from canaryd.credentials import DEFAULT_CREDENTIALS_DIR, ENV_CREDENTIALS_DIR, credentials_file
from canaryd.metrics.presets import PresetOptions
from canaryd.outbound import FaultKind, OutboundError, check_url, origin_of
from canaryd.policy.model import CanaryPolicy, Source, check_headers


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries. Worst case per fetch: ``min(budget_s, budget_fraction * window)``."""

    attempts: int = 3
    timeout_s: float = 5.0
    """TOTAL deadline of one request (connect, TLS, headers and body), not a per-read timeout."""
    backoff_s: float = 0.2
    backoff_max_s: float = 2.0
    budget_s: float = 20.0
    budget_fraction: float = 0.5
    """Of the window: one fetch never runs longer than this share of the analysis interval."""


@dataclass(frozen=True)
class AuthConfig:
    """Credentials by file. At most one of a bearer token and basic auth."""

    bearer_token_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    headers: tuple[tuple[str, str], ...] = ()
    """Extra headers (a tenant header such as ``X-Scope-OrgID``); never credentials."""

    @property
    def scheme(self) -> Literal["bearer", "basic", "none"]:
        if self.bearer_token_file is not None:
            return "bearer"
        if self.username is not None:
            return "basic"
        return "none"

    def problems(self) -> list[str]:
        out = []
        if self.bearer_token_file is not None and self.username is not None:
            out.append("give a bearer token file or basic auth, not both")
        if (self.username is None) != (self.password_file is None):
            out.append("basic auth needs both a username and a password file")
        try:
            check_headers(dict(self.headers))
        except ValueError as exc:
            out.append(str(exc))
        for f in (self.bearer_token_file, self.password_file):
            if f is not None:
                why = _unreadable(f)
                if why:
                    out.append(why)
        return out


@dataclass(frozen=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    def files(self) -> tuple[Path, ...]:
        return tuple(f for f in (self.ca_file, self.cert_file, self.key_file) if f is not None)

    def problems(self) -> list[str]:
        out = []
        if (self.cert_file is None) != (self.key_file is None):
            out.append("a client certificate needs both a cert file and a key file")
        for f in self.files():
            why = _unreadable(f)
            if why:
                out.append(why)
        if not out:
            try:
                build_ssl_context(self)
            except OutboundError as exc:
                out.append(exc.reason)
        return out


@dataclass(frozen=True)
class PrometheusConfig:
    """How to reach one Prometheus and how to batch."""

    url: str
    method: Literal["GET", "POST"] = "POST"
    max_query_bytes: int | None = None
    """URL-encoded query size limit per request; default 128 KiB for POST, 6 KiB for GET."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    round_counts: bool = True
    require_same_layout: bool = True
    """Built-in presets: stable and canary must have the same ``le`` set (else a bucket is
    missing, a partial set). The custom preset allows different layouts."""
    presets: PresetOptions = field(default_factory=PresetOptions)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    max_response_bytes: int = 64 * 1024 * 1024

    def query_limit(self) -> int:
        if self.max_query_bytes is not None:
            return self.max_query_bytes
        return 128 * 1024 if self.method == "POST" else 6 * 1024

    def problems(self) -> list[str]:
        """What would keep every query from working (bad URL, unreadable files, bad PEM)."""
        why = check_url(self.url)
        out = [why] if why else []
        if self.tls.files() and not self.url.startswith("https://"):
            out.append("TLS files are set but the URL is not https://")
        return out + self.auth.problems() + self.tls.problems()


# -- reading the files ---------------------------------------------------------------------


def _unreadable(path: Path) -> str | None:
    try:
        with path.open("rb"):
            return None
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or type(exc).__name__}"


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def build_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """A client SSL context for ``tls``; ``OutboundError(kind=CONFIG)`` naming the bad file."""
    ctx = ssl.create_default_context()
    if tls.ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(tls.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise OutboundError(
                FaultKind.CONFIG,
                f"CA file {tls.ca_file}: not a PEM certificate ({exc})",
                retryable=False,
            ) from None
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise OutboundError(
                FaultKind.CONFIG,
                f"client certificate {tls.cert_file} / key {tls.key_file}: cannot load ({exc})",
                retryable=False,
            ) from None
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Credentials:
    """The request headers and TLS context of one ``PrometheusConfig``, from its files.

    Files are stat-ed on every request and re-read only when their mtime, size or inode
    changed (a rotated ServiceAccount token, an updated Secret). Thread-safe.
    """

    def __init__(self, auth: AuthConfig, tls: TlsConfig) -> None:
        self.auth = auth
        self.tls = tls
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[tuple[int, int, int] | None, str]] = {}
        self._ctx: tuple[tuple[object, ...], ssl.SSLContext] | None = None

    def _read(self, path: Path, what: str, *, strip_all: bool) -> str:
        stamp = _stamp(path)
        cached = self._cache.get(path)
        if cached is not None and stamp is not None and cached[0] == stamp:
            return cached[1]
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise OutboundError(
                FaultKind.CONFIG, f"cannot read the {what} file {path}: {reason}", retryable=False
            ) from None
        value = text.strip() if strip_all else text.rstrip("\r\n")
        if not value:
            raise OutboundError(
                FaultKind.CONFIG, f"the {what} file {path} is empty", retryable=False
            )
        self._cache[path] = (stamp, value)
        return value

    def headers(self) -> dict[str, str]:
        out = dict(self.auth.headers)
        with self._lock:
            if self.auth.bearer_token_file is not None:
                token = self._read(self.auth.bearer_token_file, "bearer token", strip_all=True)
                out["Authorization"] = f"Bearer {token}"
            elif self.auth.username is not None and self.auth.password_file is not None:
                password = self._read(self.auth.password_file, "password", strip_all=False)
                pair = f"{self.auth.username}:{password}".encode()
                out["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        return out

    def ssl_context(self) -> ssl.SSLContext:
        with self._lock:
            key = tuple(_stamp(f) for f in self.tls.files())
            if self._ctx is None or self._ctx[0] != key:
                self._ctx = (key, build_ssl_context(self.tls))
            return self._ctx[1]


# -- where the URL and the credentials come from -------------------------------------------


def parse_header(text: str) -> tuple[str, str]:
    """``"Name: value"`` → ``("Name", "value")``; ValueError with what was expected."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


@dataclass(frozen=True)
class PrometheusDefaults:
    """The daemon's Prometheus settings (flags, else environment) and how policies refine them.

    ``base`` carries the non-connection settings (method, retry budget, presets) every resolved
    config starts from.
    """

    url: str | None = None
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    credentials_dir: Path = DEFAULT_CREDENTIALS_DIR
    base: PrometheusConfig = field(default_factory=lambda: PrometheusConfig(url=""))

    ENV: ClassVar[dict[str, str]] = {
        "url": "CANARYD_PROMETHEUS_URL",
        "bearer_token_file": "CANARYD_PROMETHEUS_BEARER_TOKEN_FILE",
        "username": "CANARYD_PROMETHEUS_USERNAME",
        "password_file": "CANARYD_PROMETHEUS_PASSWORD_FILE",
        "headers": "CANARYD_PROMETHEUS_HEADERS",
        "ca_file": "CANARYD_PROMETHEUS_CA_FILE",
        "cert_file": "CANARYD_PROMETHEUS_CERT_FILE",
        "key_file": "CANARYD_PROMETHEUS_KEY_FILE",
        "insecure_skip_verify": "CANARYD_PROMETHEUS_INSECURE_SKIP_VERIFY",
        "credentials_dir": ENV_CREDENTIALS_DIR,
    }
    """Environment variables, one per setting; ``CANARYD_PROMETHEUS_HEADERS`` holds
    ``Name: value`` lines (newline-separated)."""

    @classmethod
    def from_settings(
        cls,
        *,
        env: Mapping[str, str] | None = None,
        url: str | None = None,
        bearer_token_file: str | None = None,
        username: str | None = None,
        password_file: str | None = None,
        headers: Sequence[str] = (),
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        insecure_skip_verify: bool | None = None,
        credentials_dir: str | None = None,
        base: PrometheusConfig | None = None,
    ) -> PrometheusDefaults:
        """Flags (the keyword arguments) override the environment. ValueError on bad input."""
        e = os.environ if env is None else env

        def pick(flag: str | None, key: str) -> str | None:
            if flag:
                return flag
            return e.get(cls.ENV[key]) or None

        def path(flag: str | None, key: str) -> Path | None:
            value = pick(flag, key)
            return Path(value) if value else None

        header_lines = list(headers) or [
            line for line in (e.get(cls.ENV["headers"]) or "").splitlines() if line.strip()
        ]
        parsed = tuple(parse_header(h) for h in header_lines)
        check_headers(dict(parsed))
        skip = insecure_skip_verify
        if skip is None:
            raw = (e.get(cls.ENV["insecure_skip_verify"]) or "").strip().lower()
            if raw not in ("", "true", "false", "1", "0", "yes", "no"):
                raise ValueError(
                    f"{cls.ENV['insecure_skip_verify']}: expected true or false, got {raw!r}"
                )
            skip = raw in ("true", "1", "yes")
        the_url = pick(url, "url")
        if the_url is not None:
            why = check_url(the_url)
            if why:
                raise ValueError(f"Prometheus URL: {why}")
        creds = pick(credentials_dir, "credentials_dir")
        return cls(
            url=the_url,
            auth=AuthConfig(
                bearer_token_file=path(bearer_token_file, "bearer_token_file"),
                username=pick(username, "username"),
                password_file=path(password_file, "password_file"),
                headers=parsed,
            ),
            tls=TlsConfig(
                ca_file=path(ca_file, "ca_file"),
                cert_file=path(cert_file, "cert_file"),
                key_file=path(key_file, "key_file"),
                insecure_skip_verify=skip,
            ),
            credentials_dir=Path(creds) if creds else DEFAULT_CREDENTIALS_DIR,
            base=base if base is not None else PrometheusConfig(url=""),
        )

    def _file(self, name: str | None) -> Path | None:
        """A policy's file reference, inside the credentials directory."""
        return None if name is None else credentials_file(self.credentials_dir, name)

    def resolve(self, source: Source) -> PrometheusConfig | None:
        """The server and credentials a policy's source reads from (None: it has none).

        ValueError when a policy's file reference leaves the credentials directory.
        """
        url = source.prometheus or self.url
        if url is None:
            return None
        own_origin = self.url is not None and origin_of(url) == origin_of(self.url)
        auth = self.auth if own_origin else AuthConfig()
        tls = self.tls if own_origin else TlsConfig()
        if source.auth is not None:
            pa = source.auth
            if pa.bearer_token_file is not None:
                auth = replace(
                    auth,
                    bearer_token_file=self._file(pa.bearer_token_file),
                    username=None,
                    password_file=None,
                )
            elif pa.basic_auth is not None:
                auth = replace(
                    auth,
                    bearer_token_file=None,
                    username=pa.basic_auth.username,
                    password_file=self._file(pa.basic_auth.password_file),
                )
            if pa.headers:
                merged = {k.lower(): (k, v) for k, v in auth.headers}
                merged.update({k.lower(): (k, v) for k, v in pa.headers.items()})
                auth = replace(auth, headers=tuple(sorted(merged.values())))
        if source.tls is not None:
            pt = source.tls
            tls = TlsConfig(
                ca_file=self._file(pt.ca_file) if pt.ca_file else tls.ca_file,
                cert_file=self._file(pt.cert_file) if pt.cert_file else tls.cert_file,
                key_file=self._file(pt.key_file) if pt.key_file else tls.key_file,
                insecure_skip_verify=pt.insecure_skip_verify or tls.insecure_skip_verify,
            )
        return replace(self.base, url=url, auth=auth, tls=tls)

    def problems(self) -> list[str]:
        """The daemon's own settings: what is wrong with them (files, URL), if anything."""
        if self.url is None:
            out = []
            if self.auth.scheme != "none" or self.auth.headers or self.tls.files():
                out.append("Prometheus credentials or TLS files are set but no URL")
            return out
        return replace(self.base, url=self.url, auth=self.auth, tls=self.tls).problems()

    def policy_problems(self, policies: Sequence[CanaryPolicy]) -> dict[str, str]:
        """Policy name → why it cannot read any Prometheus (no URL, bad files)."""
        out: dict[str, str] = {}
        own = (
            replace(self.base, url=self.url, auth=self.auth, tls=self.tls)
            if self.url is not None
            else None
        )
        for policy in policies:
            source = policy.spec.analysis.source
            try:
                config = self.resolve(source)
            except ValueError as exc:
                out[policy.name] = str(exc)
                continue
            if config is None:
                out[policy.name] = (
                    "no Prometheus to read: set spec.analysis.source.prometheus, or the "
                    "daemon's --prometheus / $CANARYD_PROMETHEUS_URL"
                )
                continue
            if config == own:
                continue  # the daemon's own settings: ``problems()`` reports them once
            problems = config.problems()
            if problems:
                out[policy.name] = f"Prometheus {config.url}: " + "; ".join(problems)
        return out
