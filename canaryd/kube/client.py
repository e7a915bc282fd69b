"""Building an ApiClient the way kubectl does, with one-line errors for a wrong setup.

Order, as kubectl: an explicit ``--kubeconfig`` (which must exist), else ``$KUBECONFIG`` (a
``:``-separated list, merged: the first file that sets a value wins), else the in-cluster
ServiceAccount, else ``~/.kube/config``. ``--context`` picks a context of the kubeconfig.

Proxy settings are read from the environment once, here, when the client is built (the
client's Configuration does that), never per request.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from canaryd.errors import CanarydError

DEFAULT_TIMEOUT_S = (3.0, 15.0)
"""(connect, read) timeout of every request canaryd makes, unless a call asks for another."""
POOL_SIZE = 64
"""HTTP connections kept per client: every watched collection holds one open (a watch)."""


class KubeConfigError(CanarydError):
    """No usable cluster configuration: the message says what to do."""


def load_api_client(
    kubeconfig: str | None = None, context: str | None = None, *, in_cluster: bool = True
) -> k8s.ApiClient:
    """An ApiClient from ``kubeconfig``, ``$KUBECONFIG``, the in-cluster config or ~/.kube/config.

    Raises ``KubeConfigError`` with a one-line, actionable message (never a traceback chain).
    """
    if kubeconfig is not None:
        if not Path(kubeconfig).is_file():
            raise KubeConfigError(f"kubeconfig {kubeconfig} does not exist")
        return _from_files([kubeconfig], context)
    env = os.environ.get("KUBECONFIG", "")
    files = [f for f in env.split(os.pathsep) if f]
    if files:
        present = [f for f in files if Path(f).is_file()]
        if not present:
            raise KubeConfigError(f"none of the files in KUBECONFIG exist ({env})")
        return _from_files(present, context)
    if in_cluster and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = _configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException as exc:
            raise KubeConfigError(f"in-cluster configuration failed: {exc}") from None
        return k8s.ApiClient(configuration)
    default = Path.home() / ".kube" / "config"
    if not default.is_file():
        raise KubeConfigError(
            "no cluster configuration: pass --kubeconfig FILE, set KUBECONFIG, or run in a pod "
            f"with a ServiceAccount (looked for {default})"
        )
    return _from_files([str(default)], context)


def _configuration() -> k8s.Configuration:
    configuration = k8s.Configuration()
    configuration.connection_pool_maxsize = POOL_SIZE
    return configuration


def _from_files(files: list[str], context: str | None) -> k8s.ApiClient:
    configuration = _configuration()
    try:
        # A ':'-joined list is merged as kubectl merges $KUBECONFIG (first file wins).
        k8s_config.load_kube_config(
            config_file=os.pathsep.join(files),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except k8s_config.ConfigException as exc:
        where = files[0] if len(files) == 1 else "KUBECONFIG"
        raise KubeConfigError(f"{where}: {_first_line(exc)}") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise KubeConfigError(f"{files[0]}: not a valid kubeconfig ({exc})") from None
    return k8s.ApiClient(configuration)


def current_namespace(kubeconfig: str | None = None, context: str | None = None) -> str:
    """The namespace kubectl would use: the context's, the pod's (in cluster), or ``default``."""
    files = (
        [kubeconfig]
        if kubeconfig
        else [f for f in os.environ.get("KUBECONFIG", "").split(os.pathsep) if f]
    )
    if not files and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        default = Path.home() / ".kube" / "config"
        files = [str(default)] if default.is_file() else []
    if files:
        try:
            contexts, active = k8s_config.list_kube_config_contexts(os.pathsep.join(files))
        except (k8s_config.ConfigException, OSError, ValueError, TypeError, KeyError):
            return "default"
        chosen = (
            next((c for c in contexts or [] if c.get("name") == context), None)
            if context
            else active
        )
        ns = ((chosen or {}).get("context") or {}).get("namespace")
        return str(ns) if ns else "default"
    sa = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return sa.read_text().strip() or "default"
    except OSError:
        return "default"


def bearer_token_client(host: str, token: str, ca_cert_file: str | None) -> k8s.ApiClient:
    """An ApiClient that authenticates with a bearer token (for example a ServiceAccount's)."""
    configuration = k8s.Configuration(host=host)
    configuration.connection_pool_maxsize = POOL_SIZE
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    if ca_cert_file is not None:
        configuration.ssl_ca_cert = ca_cert_file
    return k8s.ApiClient(configuration)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
