"""The daemon's credentials directory: where policies' secret file references point.

A policy never holds a secret; it names a file (``thanos-token``, ``slack-webhook-url``) relative to
the credentials directory (``--credentials-dir``, ``$CANARYD_CREDENTIALS_DIR``, default
``/etc/canaryd/credentials``, where ``deploy/`` mounts a Secret). ``credentials_file`` resolves
such a name and refuses one that leads outside the directory (``..``, an absolute path, a
symlink pointing elsewhere), so a policy author cannot make canaryd read, and send to a server
of their choosing, some other file of its pod such as the ServiceAccount token.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_CREDENTIALS_DIR = Path("/etc/canaryd/credentials")
ENV_CREDENTIALS_DIR = "CANARYD_CREDENTIALS_DIR"


def credentials_file(root: Path, name: str) -> Path:
    """``root / name`` resolved; ValueError when it is not inside ``root``."""
    base = root.resolve()
    path = (base / name).resolve()
    if path != base and base in path.parents:
        return path
    raise ValueError(f"{name!r} resolves outside the credentials directory {base}")
