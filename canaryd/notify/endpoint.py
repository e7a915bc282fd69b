"""Turning a policy's ``Endpoint`` (``url`` or ``urlFrom``) into a URL, at call time.

``urlFrom.file`` is read from the credentials directory at every call (a rotated Secret is
picked up at once; the file is small); ``urlFrom.env`` names a ``CANARYD_WEBHOOK_*`` variable
of the daemon. ``describe`` names an endpoint in logs and metrics without its secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from canaryd.credentials import DEFAULT_CREDENTIALS_DIR, credentials_file
from canaryd.outbound import FaultKind, OutboundError, check_url, safe_url
from canaryd.policy.model import Endpoint


@dataclass(frozen=True)
class EndpointResolver:
    credentials_dir: Path = DEFAULT_CREDENTIALS_DIR
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def url(self, ep: Endpoint) -> str:
        """The URL to call; ``OutboundError(kind=CONFIG)`` when it cannot be had."""
        if ep.url is not None:
            return ep.url
        ref = ep.url_from
        assert ref is not None  # the model requires one of url / urlFrom
        if ref.file is not None:
            try:
                path = credentials_file(self.credentials_dir, ref.file)
                value = path.read_text(encoding="utf-8").strip()
            except ValueError as exc:
                raise OutboundError(FaultKind.CONFIG, str(exc), retryable=False) from None
            except (OSError, UnicodeDecodeError) as exc:
                why = getattr(exc, "strerror", None) or type(exc).__name__
                raise OutboundError(
                    FaultKind.CONFIG,
                    f"cannot read the URL file {ref.file!r} in {self.credentials_dir}: {why}",
                    retryable=False,
                ) from None
            where = f"file {ref.file!r}"
        else:
            assert ref.env is not None
            value = (self.env.get(ref.env) or "").strip()
            where = f"${ref.env}"
        if not value:
            raise OutboundError(FaultKind.CONFIG, f"the URL in {where} is empty", retryable=False)
        problem = check_url(value)
        if problem is not None:
            # Not the value itself: it holds the secret.
            raise OutboundError(
                FaultKind.CONFIG, f"the URL in {where} is not usable: {problem}", retryable=False
            )
        return value


def describe(ep: Endpoint) -> str:
    """A name for ``ep`` that holds no secret (for logs, errors and Events)."""
    if ep.url is not None:
        return safe_url(ep.url)
    ref = ep.url_from
    assert ref is not None
    return f"urlFrom file {ref.file!r}" if ref.file is not None else f"urlFrom ${ref.env}"
