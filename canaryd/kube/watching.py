"""A watch-fed cache of the objects the daemon reads: client-go's informer, small.

One *reflector* per (resource, namespace, label selector) keeps a local copy of that collection:

1. **LIST** the collection (raw JSON, no client models) and replace the copy; remember the
   list's ``resourceVersion``. The reflector is *synced* from then on.
2. **WATCH** from that resourceVersion with bookmarks (``allowWatchBookmarks``) through the
   official client's ``kubernetes.watch.Watch``; apply ADDED / MODIFIED / DELETED to the copy
   and advance the resourceVersion on every event and BOOKMARK. A watch that the server ends
   (its ``timeoutSeconds``) is resumed from the last resourceVersion.
3. **410 ApiGoneError** (the resourceVersion has been compacted away) means events were missed: LIST
   again. A broken connection (an apiserver restart) is retried with backoff from the last
   resourceVersion, which becomes a LIST if the server answers 410.
4. **Resync**: every ``resync_s`` the collection is LISTed again even when nothing failed, as a
   safety net against a missed event (client-go's informers re-deliver their cache; a re-list is
   the stronger repair and costs one LIST per collection per period).

An object deleted and created again under the same name arrives as DELETED then ADDED, so the
copy holds the new object (a new ``uid``); callers that tie state to an object compare uids.

Readers get the cached object itself, not a copy: **never mutate what ``lookup`` returns**
(``update_object`` deep-copies before it mutates). ``lookup`` answers False for a collection
that is not watched (or not synced yet), so ``KubeObjects`` falls back to a GET.

Compared with kopf (which watches and hands each event to a handler, keeping no shared cache)
and client-go (Reflector + DeltaFIFO + Indexer), this keeps only what canaryd needs: a store per
collection, read synchronously by the tick. DESIGN-NOTES.md says why.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from canaryd.kube.api import JSON, raw_request
from canaryd.kube.errors import ApiError, ApiGoneError, from_exception
from canaryd.kube.resources import Resource

log = logging.getLogger("canaryd.kube.watch")


@dataclass(frozen=True)
class Collection:
    """What one reflector mirrors."""

    resource: Resource
    namespace: str
    label_selector: str | None = None
    drop_data: bool = False
    """Keep only the objects' metadata (a ConfigMap's ``data`` is read with a GET when it is
    needed): the state documents are written by this daemon and read back only rarely."""

    def __str__(self) -> str:
        sel = f" [{self.label_selector}]" if self.label_selector else ""
        return f"{self.resource}/{self.namespace}{sel}"


def _interned(value: Any) -> Any:
    """``value`` (parsed JSON) rebuilt with every dict key interned (``sys.intern``).

    Each watch event is parsed on its own, so every cached object held its own copies of
    "metadata", "status", "latestReadyRevision" and the like: about 2 of an
    InferenceService's 6 KB. Keys come from the objects' schemas (and their label and
    annotation names), a small set, so interning them holds nothing that would otherwise
    be freed. Values are left as they are (uids and resourceVersions would only grow the
    interned table)."""
    if isinstance(value, dict):
        return {sys.intern(k) if type(k) is str else k: _interned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interned(v) for v in value]
    return value


class _Reflector:
    def __init__(self, cache: WatchCache, collection: Collection) -> None:
        self.cache = cache
        self.collection = collection
        self.items: dict[str, JSON] = {}
        self.resource_version: str | None = None
        self.synced = threading.Event()
        self.stopped = threading.Event()
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self._watch: k8s_watch.Watch | None = None
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"watch {collection}", daemon=True)

    # -- the loop ----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.cache.backoff_s
        while not self.stopped.is_set():
            try:
                self._list()
                backoff = self.cache.backoff_s
                self._watch_until_resync()
            except ApiGoneError:
                self.cache.stats["relists_gone"] += 1
                log.info("watch expired (410 ApiGoneError); listing again", extra=self._fields())
            except Exception as exc:  # broken connections, apiserver down: retry with backoff
                self._failed(exc)
                if self.stopped.wait(backoff):
                    return
                backoff = min(backoff * 2, self.cache.backoff_max_s)

    def _list(self) -> None:
        c = self.collection
        query = {"labelSelector": c.label_selector} if c.label_selector else None
        body = raw_request(
            self.cache.api_client,
            "GET",
            c.resource.collection_path(c.namespace),
            query=query,
            what=f"list {c}",
        )
        self.cache.stats["lists"] += 1
        items = {}
        for obj in body.get("items") or []:
            if isinstance(obj, dict):
                obj = self._shape(obj)
                name = (obj.get("metadata") or {}).get("name")
                if name:
                    items[str(name)] = obj
        with self._lock:
            self.items = items
            self.resource_version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        self._ok()
        self.synced.set()
        self.cache._changed(c)

    def _watch_until_resync(self) -> None:
        deadline = time.monotonic() + self.cache.resync_s
        failures = 0
        while not self.stopped.is_set() and time.monotonic() < deadline:
            try:
                self._watch_once(min(self.cache.watch_timeout_s, deadline - time.monotonic()))
                failures = 0
            except ApiGoneError:
                raise
            except Exception as exc:
                # The stream broke (apiserver restart, network): resume from the last
                # resourceVersion after a pause; a 410 on resuming means re-list.
                failures += 1
                self._failed(exc)
                pause = min(self.cache.backoff_s * 2**failures, self.cache.backoff_max_s)
                if self.stopped.wait(pause):
                    return
        self.cache.stats["resyncs"] += 1

    def _watch_once(self, timeout_s: float) -> None:
        c = self.collection
        timeout = max(1, int(timeout_s))
        w = k8s_watch.Watch()
        self._watch = w
        self.cache.stats["watches"] += 1
        kwargs: dict[str, Any] = {
            "resource_version": self.resource_version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": timeout,
            "_request_timeout": (5.0, timeout + 15.0),
        }
        if c.label_selector:
            kwargs["label_selector"] = c.label_selector
        try:
            for event in w.stream(self._list_function(), **kwargs):
                if self.stopped.is_set():
                    w.stop()
                    break
                self._apply(event)
        except ApiError:
            raise
        except Exception as exc:
            err = from_exception(exc, f"watch {c}")
            raise err from None
        finally:
            self._watch = None

    def _list_function(self) -> Callable[..., Any]:
        """The client's list call, wrapped so that Watch hands back raw JSON (no models)."""
        c = self.collection
        api = self.cache.api_client
        if c.resource.group:
            custom = k8s.CustomObjectsApi(api)

            def list_custom(**kwargs: Any) -> Any:
                return custom.list_namespaced_custom_object(
                    c.resource.group, c.resource.version, c.namespace, c.resource.plural, **kwargs
                )

            return list_custom
        if c.resource.plural != "configmaps":
            raise ValueError(f"no core list function for {c.resource}")
        core = k8s.CoreV1Api(api)

        def list_configmaps(**kwargs: Any) -> Any:
            return core.list_namespaced_config_map(c.namespace, **kwargs)

        return list_configmaps

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("raw_object") or event.get("object")
        if not isinstance(obj, dict):
            return
        meta = obj.get("metadata") or {}
        rv = meta.get("resourceVersion")
        self.cache.stats["events"] += 1
        if kind == "BOOKMARK":
            if rv:
                self.resource_version = str(rv)
            self.cache.stats["bookmarks"] += 1
            self._ok()
            return
        name = meta.get("name")
        if not name:
            return
        obj = self._shape(obj)
        with self._lock:
            if kind in ("ADDED", "MODIFIED"):
                self.items[str(name)] = obj
            elif kind == "DELETED":
                self.items.pop(str(name), None)
            if rv:
                self.resource_version = str(rv)
        self._ok()
        self.cache._changed(self.collection, str(name))

    def _shape(self, obj: JSON) -> JSON:
        """What the cache keeps of ``obj``: never ``metadata.managedFields`` (server-side
        apply's bookkeeping, often the largest part of an object, read by nobody here; a write
        that omits it leaves it as it is on the server), and no ``data`` for collections that
        only need to know an object exists (``drop_data``). The copy kept has its keys interned
        (``_interned``): the same values, a third less memory per object."""
        meta = obj.get("metadata")
        if isinstance(meta, dict) and "managedFields" in meta:
            obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
        if self.collection.drop_data:
            obj = {k: v for k, v in obj.items() if k not in ("data", "binaryData")}
        return _interned(obj)

    # -- health ------------------------------------------------------------------------

    def _ok(self) -> None:
        self.last_error = None
        self.failing_since = None

    def _failed(self, exc: BaseException) -> None:
        if self.stopped.is_set():
            return  # a stream broken by our own shutdown
        self.cache.stats["errors"] += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        log.warning("watch failed; retrying", extra=self._fields(error=self.last_error))

    def _fields(self, **more: Any) -> dict[str, Any]:
        return {"fields": {"collection": str(self.collection), **more}}

    def stop(self) -> None:
        self.stopped.set()
        w = self._watch
        if w is not None:
            w.stop()


class WatchCache:
    """The daemon's view of the cluster: watched collections, read without API calls."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        resync_s: float = 600.0,
        watch_timeout_s: float = 300.0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 15.0,
        on_change: Callable[[Collection, str | None], None] | None = None,
    ) -> None:
        self.api_client = api_client
        self.resync_s = resync_s
        self.watch_timeout_s = watch_timeout_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.on_change = on_change
        self.stats: Counter[str] = Counter()
        """lists, watches, events, bookmarks, relists_gone, resyncs, errors."""
        self._reflectors: dict[Collection, _Reflector] = {}
        self._by_resource: dict[tuple[str, str], list[_Reflector]] = {}
        self._running = False
        self._lock = threading.Lock()

    # -- what to watch -----------------------------------------------------------------

    def ensure(self, collections: Iterable[Collection]) -> None:
        """Watch exactly ``collections``: start the new ones, stop the ones no longer wanted."""
        wanted = set(collections)
        with self._lock:
            for c in set(self._reflectors) - wanted:
                self._reflectors.pop(c).stop()
            for c in wanted - set(self._reflectors):
                r = _Reflector(self, c)
                self._reflectors[c] = r
                if self._running:
                    r.thread.start()
            self._index()

    def _index(self) -> None:
        by: dict[tuple[str, str], list[_Reflector]] = {}
        for c, r in self._reflectors.items():
            by.setdefault((str(c.resource), c.namespace), []).append(r)
        self._by_resource = by

    def start(self) -> None:
        with self._lock:
            self._running = True
            for r in self._reflectors.values():
                if not r.thread.is_alive() and not r.stopped.is_set():
                    r.thread.start()

    def stop(self, join_s: float = 6.0) -> None:
        """Stop every watch and wait up to ``join_s`` for their threads to end.

        Waiting matters when the process exits next: a watch thread still inside a TLS
        connect while the interpreter finalizes (the client's temporary CA file already
        removed at exit) aborted ``canaryd run --once`` with SIGABRT. A connect is bounded by
        the watch's 5 s connect timeout, so the wait is too.
        """
        with self._lock:
            self._running = False
            reflectors = list(self._reflectors.values())
            for r in reflectors:
                r.stop()
        deadline = time.monotonic() + join_s
        for r in reflectors:
            if r.thread.is_alive():
                r.thread.join(max(0.0, deadline - time.monotonic()))

    def wait_synced(self, timeout_s: float = 60.0) -> bool:
        """Block until every watched collection has been listed once (False on timeout)."""
        deadline = time.monotonic() + timeout_s
        for r in list(self._reflectors.values()):
            if not r.synced.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    # -- reads -------------------------------------------------------------------------

    def _find(self, resource: Resource, namespace: str) -> list[_Reflector]:
        # Versions of one group share a collection: the key ignores the version.
        return self._by_resource.get((str(resource), namespace), [])

    def lookup(self, resource: Resource, namespace: str, name: str) -> JSON | bool | None:
        """The cached object; None if the synced cache does not hold it; False if not cached.

        A collection watched with a label selector answers for the objects that carry the
        label: an object without it counts as absent (canaryd labels everything it owns).
        """
        found_synced = False
        for r in self._find(resource, namespace):
            if not r.synced.is_set():
                continue
            found_synced = True
            with r._lock:
                got = r.items.get(name)
            if got is not None:
                return got
        return None if found_synced else False

    def has(self, resource: Resource, namespace: str, name: str) -> bool:
        """Whether a synced collection holds the object."""
        return isinstance(self.lookup(resource, namespace, name), dict)

    def items(self, resource: Resource, namespace: str) -> list[JSON]:
        out: list[JSON] = []
        for r in self._find(resource, namespace):
            with r._lock:
                out.extend(r.items.values())
        return out

    def problem(self, stale_after_s: float = 60.0) -> str | None:
        """Why the cache cannot be trusted now (unsynced, or failing for long), or None."""
        now = time.monotonic()
        for c, r in self._reflectors.items():
            if not r.synced.is_set():
                return f"watch {c} not synced yet" + (f" ({r.last_error})" if r.last_error else "")
            if r.failing_since is not None and now - r.failing_since > stale_after_s:
                return f"watch {c} failing for {now - r.failing_since:.0f}s: {r.last_error}"
        return None

    def _changed(self, collection: Collection, name: str | None = None) -> None:
        if self.on_change is not None:
            try:
                self.on_change(collection, name)
            except Exception:
                log.exception("watch cache listener failed")
