"""An in-memory Kubernetes API server for tests and for ``cloudpilot demo``.

It is a subclass of kmock's ``KubernetesEmulator`` that keeps kmock's DSL (so tests can still
inject failures: ``emulator[kmock.action.CREATE, kmock.resource('v1/secrets')] << 503``) but its
state handling is replaced: kopf and the official client rely on server behaviour kmock lacks:

* ``metadata.uid``, ``creationTimestamp``, ``generation`` and a cluster-wide monotonic
  ``resourceVersion`` (kopf JSON-patches with ``test /metadata/resourceVersion`` and waits for
  the watch event carrying the version it wrote);
* RFC 7386 merge-patches, JSON-patches whose failed ``test`` answers 422 (kopf's signal to retry),
  ``PUT`` (the client's ``replace_*`` calls), and the ``/status`` and ``/scale`` subresources;
* watches that resume from a ``resourceVersion`` (kopf lists, then watches from the list's
  version) and honour label/field selectors and ``timeoutSeconds``.

All state changes are synchronous (no ``await`` between reading and writing), so they are atomic
in the server's event loop without locks. The server only ever binds to loopback addresses.

Not emulated: schema validation and defaulting, admission, RBAC, strategic-merge semantics
(strategic-merge patches are applied as merge-patches), server-side apply, cascading deletion,
``deletecollection``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import dataclasses
import datetime
import ipaddress
import json
import os
import re
import socket
import tempfile
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal.rendering import StreamingError

from cloudpilot_devtools.background import BackgroundServer

__all__ = [
    "DEFAULT_RESOURCES",
    "ClusterEmulator",
    "ClusterEmulatorThread",
    "ResourceSpec",
    "ServedCluster",
    "serve_cluster",
    "write_kubeconfig",
]

T = TypeVar("T")
Obj = dict[str, Any]

# Metadata that only the server sets; clients cannot change it with a write.
_SERVER_META = (
    "uid",
    "name",
    "namespace",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
)
# Metadata that the real server omits when empty (kopf knows this and so should tests).
_OMIT_EMPTY_META = ("finalizers", "labels", "annotations", "ownerReferences", "managedFields")
_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResourceSpec:
    """One served resource, declared the way a CRD (or a built-in API group) would declare it.

    ``spec_replicas_path``/``status_replicas_path``/``label_selector_path`` mirror the CRD's
    ``subresources.scale`` fields and are used only if ``'scale'`` is in ``subresources``.
    """

    resource: str  # 'group/version/plural', or 'v1/plural' for the core group
    kind: str
    namespaced: bool = True
    subresources: frozenset[str] = frozenset()
    shortnames: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    label_selector_path: str | None = None

    @property
    def ref(self) -> kmock.resource:
        return kmock.resource(self.resource)

    @property
    def api_version(self) -> str:
        return self.resource.rsplit("/", 1)[0]


DEFAULT_RESOURCES: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        resource="cloudpilot.io/v1alpha1/cloudpilotpools",
        kind="CloudPilotPool",
        subresources=frozenset({"status", "scale"}),
        shortnames=("cpp", "cppool"),
        categories=("cloudpilot",),
    ),
    ResourceSpec(
        resource="v1/namespaces",
        kind="Namespace",
        namespaced=False,
        subresources=frozenset({"status"}),
        shortnames=("ns",),
    ),
    ResourceSpec(resource="v1/events", kind="Event", shortnames=("ev",)),
    ResourceSpec(resource="v1/secrets", kind="Secret"),
    ResourceSpec(resource="v1/configmaps", kind="ConfigMap", shortnames=("cm",)),
    ResourceSpec(
        resource="apiextensions.k8s.io/v1/customresourcedefinitions",
        kind="CustomResourceDefinition",
        namespaced=False,
        subresources=frozenset({"status"}),
        shortnames=("crd", "crds"),
    ),
    ResourceSpec(resource="coordination.k8s.io/v1/leases", kind="Lease"),
)


def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _get_path(obj: Mapping[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.strip(".").split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _set_path(obj: Obj, path: str, value: Any) -> Obj:
    result = copy.deepcopy(obj)
    *parents, leaf = path.strip(".").split(".")
    node = result
    for part in parents:
        node = node.setdefault(part, {}) if isinstance(node.get(part), dict | None) else {}
    node[leaf] = value
    return result


def _merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge-patch: dicts merge recursively, ``null`` deletes, else replace."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _apply_patch(target: Obj, patch: Any, content_type: str) -> Obj:
    if content_type == "application/json-patch+json":
        if not isinstance(patch, list):
            raise _error(400, "BadRequest", "a JSON-patch must be a list of operations")
        try:
            result = jsonpatch.apply_patch(target, patch, in_place=False)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
            raise _error(422, "Invalid", f"the JSON-patch cannot be applied: {e}") from e
    elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        if not isinstance(patch, dict):
            raise _error(400, "BadRequest", "a merge-patch must be a JSON object")
        result = _merge_patch(target, patch)
    else:
        raise _error(415, "UnsupportedMediaType", f"unsupported patch type: {content_type!r}")
    if not isinstance(result, dict):
        raise _error(422, "Invalid", "the patched object is not a JSON object")
    return result


def _selector(expr: str, lookup: Callable[[Obj, str], object]) -> Callable[[Obj], bool]:
    """Compile a label/field selector: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``,
    ``k notin (a,b)``, comma-separated (all must hold)."""
    checks: list[Callable[[Obj], bool]] = []
    for term in re.split(r",(?![^()]*\))", expr):
        if not term.strip():
            continue
        if m := re.fullmatch(r"\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*", term):
            key, negate, values = m[1], m[2] == "notin", {v.strip() for v in m[3].split(",")}

            def among(o: Obj, k: str = key, n: bool = negate, vs: set[str] = values) -> bool:
                return (lookup(o, k) in vs) != n

            checks.append(among)
        elif m := re.fullmatch(r"\s*([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)\s*", term):
            key, negate, value = m[1], m[2] == "!=", m[3]

            def equal(o: Obj, k: str = key, n: bool = negate, v: str = value) -> bool:
                return (lookup(o, k) == v) != n

            checks.append(equal)
        elif m := re.fullmatch(r"\s*(!?)\s*([\w./-]+)\s*", term):
            key, negate = m[2], m[1] == "!"

            def present(o: Obj, k: str = key, n: bool = negate) -> bool:
                return (lookup(o, k) is not None) != n

            checks.append(present)
        else:
            raise _error(400, "BadRequest", f"unable to parse the selector {expr!r}")
    return lambda obj: all(check(obj) for check in checks)


def _label(obj: Obj, key: str) -> Any:
    return (obj.get("metadata", {}).get("labels") or {}).get(key)


def _field(obj: Obj, key: str) -> Any:
    value = _get_path(obj, key)
    return None if value is None else str(value)


@dataclasses.dataclass(eq=False)
class _Watcher:
    resource: kmock.resource
    accepts: Callable[[Obj], bool]
    queue: asyncio.Queue[Obj | None] = dataclasses.field(default_factory=asyncio.Queue)


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    """A kmock-based Kubernetes API server emulator that kopf and ``kubernetes`` can both use.

    Objects live in kmock's ``emulator.objects`` (with their history, for assertions). Only
    declared resources are served: pass ``specs=`` or call :meth:`declare`. Serve it with
    :func:`serve_cluster` (in a loop) or :class:`ClusterEmulatorThread` (from sync code)::

        emulator = ClusterEmulator(specs=(*DEFAULT_RESOURCES, ResourceSpec(...)))
        async with serve_cluster(emulator=emulator) as served:
            served.write_kubeconfig(tmp_path / "kubeconfig")
    """

    specs: Iterable[ResourceSpec] = DEFAULT_RESOURCES
    namespaces: Iterable[str] = ("default",)  # created at start-up, as in a fresh cluster
    history_limit: int = 20  # object versions kept per object (the demo runs for hours)
    request_log_limit: int = 5000  # kmock's request log, trimmed for the same reason
    event_log_size: int = 1000  # how far back a watch can resume before it gets 410 Gone

    _specs: dict[kmock.resource, ResourceSpec] = attrs.field(factory=dict, init=False)
    _watchers: set[_Watcher] = attrs.field(factory=set, init=False)
    _log: deque[tuple[int, kmock.resource, str, Obj | None, Obj]] = attrs.field(init=False)
    _dropped_rv: int = attrs.field(default=0, init=False)
    _rv: int = attrs.field(default=0, init=False)
    _closed: bool = attrs.field(default=False, init=False)

    @_log.default
    def _make_log(self) -> deque[tuple[int, kmock.resource, str, Obj | None, Obj]]:
        return deque(maxlen=self.event_log_size)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for spec in self.specs:
            self.declare(spec)
        for name in self.namespaces:
            self._create(
                self._specs[kmock.resource("v1/namespaces")], None, {"metadata": {"name": name}}
            )

    def declare(self, spec: ResourceSpec) -> None:
        """Serve one more resource (also listed in API discovery, which kopf relies on)."""
        self._specs[spec.ref] = spec
        self.resources[spec.ref] = kmock.ResourceInfo(
            kind=spec.kind,
            namespaced=spec.namespaced,
            singular=spec.kind.lower(),
            verbs=set(_VERBS),
            shortnames=set(spec.shortnames),
            categories=set(spec.categories),
            subresources=set(spec.subresources),
        )

    @property
    def resource_version(self) -> str:
        """The latest resourceVersion of the whole cluster (as a list response reports it)."""
        return str(self._rv)

    def close(self) -> None:
        """End all watch streams, so that the HTTP server can stop without waiting for them."""
        self._closed = True
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)

    # --- HTTP entry point --------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # Replaces kmock's entry point only to parse the URL differently: kmock takes any
        # `namespaces/X` as a namespace prefix, so `/api/v1/namespaces` answers 500 and
        # `/api/v1/namespaces/X` has no resource at all.
        raw_response: aiohttp.web.StreamResponse | None = None
        try:
            request = await self._parse(raw_request)
            self._requests.append(request)
            del self._requests[: -self.request_log_limit]
            try:
                return await self._handle(request)
            except StreamingError as e:  # the stream has started: the error goes into it
                raw_response = e.args[0]
                raise e.__cause__ or e from None
        except Exception as e:
            if not isinstance(e, kmock.KubernetesError) and self._errors:
                self._errors[-1].append(e)  # unexpected: kmock re-raises these if strict=True
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(e)
            await self._stream_error(e, raw_response)
            await raw_response.write_eof()
            return raw_response

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if not isinstance(exc, kmock.KubernetesError):  # a bug: kmock adds the traceback
            return await super()._render_error(exc)
        return aiohttp.web.json_response(
            {
                "apiVersion": "v1",
                "kind": "Status",
                "metadata": {},
                "status": "Failure",
                "code": exc.status,
                "reason": exc.reason,
                "message": exc.message,
                "details": exc.details or {},
            },
            status=exc.status,
        )

    async def _parse(self, raw_request: aiohttp.web.BaseRequest) -> kmock.Request:
        body = await raw_request.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        group = version = plural = namespace = name = subresource = None
        parts = raw_request.path.strip("/").split("/")
        if parts[0] in ("api", "apis") and len(parts) >= 2:
            group, rest = ("", parts[1:]) if parts[0] == "api" else (parts[1], parts[2:])
            version, rest = (rest[0], rest[1:]) if rest else (None, [])
            # `namespaces/X/Y` is a namespaced resource Y, unless Y is a namespace's subresource.
            if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
                namespace, rest = rest[1], rest[2:]
            plural = rest[0] if rest else None
            name = rest[1] if len(rest) > 1 else None
            subresource = "/".join(rest[2:]) or None
        resource = (
            None if group is None else kmock.resource(group=group, version=version, plural=plural)
        )
        method = raw_request.method.upper()
        action: kmock.action | None = None
        if resource is not None:
            if method == "GET" and raw_request.query.get("watch") in ("true", "1"):
                action = kmock.action.WATCH
            elif name is None:
                action = {"GET": kmock.action.LIST, "POST": kmock.action.CREATE}.get(method)
            else:
                action = {
                    "GET": kmock.action.FETCH,
                    "PATCH": kmock.action.UPDATE,
                    "PUT": kmock.action.UPDATE,
                    "DELETE": kmock.action.DELETE,
                }.get(method)
        return kmock.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            body=body,
            text=body.decode(errors="replace"),
            data=data,
            action=action,
            resource=resource,
            namespace=namespace,
            name=name,
            subresource=subresource,
        )

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # Skip KubernetesEmulator._handle: it changes the state even for requests that a test's
        # reaction intercepts. Here the fallbacks (_serve_*) are the server and change the state.
        return await kmock.RawHandler._handle(self, request)

    # --- request handlers (kmock fallbacks) ----------------------------------------------------

    def _spec_of(self, request: kmock.Request) -> ResourceSpec:
        spec = self._specs.get(request.resource) if request.resource is not None else None
        if spec is None or (request.subresource and request.subresource not in spec.subresources):
            raise _error(404, "NotFound", "the server could not find the requested resource")
        return spec

    def _key(self, spec: ResourceSpec, namespace: str | None, name: str) -> Any:
        return (spec.ref, namespace if spec.namespaced else None, name)

    def _current(self, key: Any) -> Obj | None:
        found = key in self._objects and not self._objects[key].deleted
        return self._objects[key].raw if found else None

    def _existing(self, spec: ResourceSpec, request: kmock.Request) -> tuple[Any, Obj]:
        assert request.name is not None
        key = self._key(spec, request.namespace, request.name)
        obj = self._current(key)
        if obj is None:
            raise _error(404, "NotFound", f"{spec.ref.plural} {request.name!r} not found")
        return key, obj

    def _scale_of(self, spec: ResourceSpec, obj: Obj) -> Obj:
        meta = obj["metadata"]
        status: Obj = {"replicas": _get_path(obj, spec.status_replicas_path) or 0}
        if spec.label_selector_path and _get_path(obj, spec.label_selector_path):
            status["selector"] = _get_path(obj, spec.label_selector_path)
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            # A CRD would default .spec.replicas from its schema; without a schema, 0 is implied.
            "spec": {"replicas": _get_path(obj, spec.spec_replicas_path) or 0},
            "status": status,
        }

    async def _serve_fetch(self, request: kmock.Request) -> kmock.Payload:
        spec = self._spec_of(request)
        _, obj = self._existing(spec, request)
        return self._scale_of(spec, obj) if request.subresource == "scale" else obj

    async def _serve_create(self, request: kmock.Request) -> kmock.Payload:
        spec = self._spec_of(request)
        if not isinstance(request.data, dict):
            raise _error(400, "BadRequest", "the request body must be a JSON object")
        # The official client (v35+) reads the created object only from a 201 response.
        created = self._create(spec, request.namespace, request.data)
        return kmock.Response(status=201, payload=created)

    async def _serve_update(self, request: kmock.Request) -> kmock.Payload:
        spec = self._spec_of(request)
        key, old = self._existing(spec, request)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        if request.method == "PATCH":
            target = self._scale_of(spec, old) if request.subresource == "scale" else old
            body = _apply_patch(target, request.data, content_type)
        elif isinstance(request.data, dict):
            body = request.data
        else:
            raise _error(400, "BadRequest", "the request body must be a JSON object")
        if request.subresource == "scale":
            replicas = _get_path(body, "spec.replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise _error(422, "Invalid", "spec.replicas must be a non-negative integer")
            new = _set_path(old, spec.spec_replicas_path, replicas)
            # The Scale's resourceVersion is the object's: it works as a precondition too.
            new["metadata"]["resourceVersion"] = body.get("metadata", {}).get("resourceVersion")
            return self._scale_of(spec, self._update(spec, key, old, new, subresource=None))
        return self._update(spec, key, old, body, subresource=request.subresource)

    async def _serve_delete(self, request: kmock.Request) -> kmock.Payload:
        spec = self._spec_of(request)
        key, old = self._existing(spec, request)
        if old["metadata"].get("deletionTimestamp"):
            return old
        if not old["metadata"].get("finalizers"):
            return self._store(spec, key, old, None)
        # Finalizers block the deletion: mark it and let the controllers release the object.
        # The real server also bumps the generation here, so controllers see a "new" intent.
        new = copy.deepcopy(old)
        new["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
        new["metadata"]["generation"] = old["metadata"].get("generation", 0) + 1
        return self._store(spec, key, old, new)

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        spec = self._spec_of(request)
        accepts = self._filter(spec, request)
        objs = self._objects_of(spec, accepts)
        list_rv, after = str(self._rv), None
        if token := request.params.get("continue"):
            try:
                list_rv, ns, name = json.loads(base64.urlsafe_b64decode(token))
                after = (ns, name)
            except ValueError as e:
                raise _error(400, "BadRequest", "invalid continue token") from e
            objs = [
                o
                for o in objs
                if (o["metadata"].get("namespace") or "", o["metadata"]["name"]) > after
            ]
        meta: Obj = {"resourceVersion": list_rv}
        limit = int(request.params.get("limit") or 0)
        if 0 < limit < len(objs):
            objs, last = objs[:limit], objs[limit - 1]["metadata"]
            token = json.dumps([list_rv, last.get("namespace") or "", last["name"]])
            meta["continue"] = base64.urlsafe_b64encode(token.encode()).decode()
        return {
            "apiVersion": spec.api_version,
            "kind": f"{spec.kind}List",
            "metadata": meta,
            "items": objs,
        }

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        spec = self._spec_of(request)
        accepts = self._filter(spec, request)
        since = request.params.get("resourceVersion", "")
        initial = request.params.get("sendInitialEvents") == "true"
        backlog: list[Obj] = []
        if since in ("", "0") or initial:  # start with the current state, as synthetic ADDEDs
            backlog = [{"type": "ADDED", "object": o} for o in self._objects_of(spec, accepts)]
            if initial and request.params.get("allowWatchBookmarks") == "true":
                backlog.append(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "apiVersion": spec.api_version,
                            "kind": spec.kind,
                            "metadata": {
                                "resourceVersion": str(self._rv),
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            },
                        },
                    }
                )
        elif not since.isdigit() or int(since) < self._dropped_rv:
            yield {
                "type": "ERROR",
                "object": {
                    "apiVersion": "v1",
                    "kind": "Status",
                    "status": "Failure",
                    "code": 410,
                    "reason": "Expired",
                    "message": f"too old resource version: {since}",
                },
            }
            return
        else:  # resume: replay what happened after that version, as the watch cache does
            backlog = [
                event
                for rv, res, kind, old, new in self._log
                if rv > int(since)
                and res == spec.ref
                and (event := self._event(accepts, kind, old, new))
            ]
        watcher = _Watcher(spec.ref, accepts)
        self._watchers.add(watcher)
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            yield b""  # send the headers now, even if no events follow for a while
            for event in backlog:
                yield event
            while not self._closed:
                remaining = None if deadline is None else deadline - loop.time()
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    return
                if event is None:
                    return
                yield event
        finally:
            self._watchers.discard(watcher)

    def _objects_of(self, spec: ResourceSpec, accepts: Callable[[Obj], bool]) -> list[Obj]:
        objs = [
            obj.raw
            for (res, _, _), obj in self._objects.items()
            if res == spec.ref and not obj.deleted
        ]
        return sorted(
            (o for o in objs if accepts(o)),
            key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]),
        )

    def _filter(self, spec: ResourceSpec, request: kmock.Request) -> Callable[[Obj], bool]:
        labels = _selector(request.params.get("labelSelector", ""), _label)
        fields = _selector(request.params.get("fieldSelector", ""), _field)
        namespace = request.namespace if spec.namespaced else None
        name = request.name

        def accepts(obj: Obj) -> bool:
            meta = obj.get("metadata", {})
            return (
                (namespace is None or meta.get("namespace") == namespace)
                and (name is None or meta.get("name") == name)
                and labels(obj)
                and fields(obj)
            )

        return accepts

    # --- state changes: synchronous, hence atomic within the event loop ------------------------

    def _create(self, spec: ResourceSpec, namespace: str | None, data: Obj) -> Obj:
        obj = copy.deepcopy(data)
        meta = obj.setdefault("metadata", {})
        if spec.namespaced:
            if namespace and meta.get("namespace", namespace) != namespace:
                raise _error(400, "BadRequest", "the object's namespace does not match the URL")
            meta["namespace"] = namespace or meta.get("namespace")
            if not meta["namespace"]:
                raise _error(400, "BadRequest", "a namespaced object needs a namespace")
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise _error(422, "Invalid", "metadata.name or metadata.generateName is required")
        key = self._key(spec, meta.get("namespace"), meta["name"])
        if self._current(key) is not None:
            raise _error(409, "AlreadyExists", f"{spec.ref.plural} {meta['name']!r} already exists")
        obj.setdefault("apiVersion", spec.api_version)
        obj.setdefault("kind", spec.kind)
        if "status" in spec.subresources:
            obj.pop("status", None)  # as for CRDs with a status subresource: written later
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        return self._store(spec, key, None, obj)

    def _update(
        self, spec: ResourceSpec, key: Any, old: Obj, body: Obj, *, subresource: str | None
    ) -> Obj:
        """Write ``body`` over ``old``, keeping what this endpoint may not change.

        With a status subresource, the main endpoint cannot change ``.status`` and ``/status``
        can change nothing else, so that users and controllers never overwrite each other's half.
        ``generation`` counts changes of the desired state only (not metadata, not status), which
        is what controllers compare with ``status.observedGeneration``.
        """
        has_status = "status" in spec.subresources
        new = copy.deepcopy(body)
        if subresource == "status":
            new = {**copy.deepcopy(old), "status": new.get("status")}
            new["metadata"]["resourceVersion"] = body.get("metadata", {}).get("resourceVersion")
        elif has_status:
            new["status"] = copy.deepcopy(old.get("status"))
        new = {k: v for k, v in new.items() if v is not None}
        meta = new.setdefault("metadata", {})
        if meta.get("resourceVersion") not in (None, old["metadata"]["resourceVersion"]):
            raise _error(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version",
            )
        for field in _SERVER_META:
            meta.pop(field, None)
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
        added = set(meta.get("finalizers") or ()) - set(old["metadata"].get("finalizers") or ())
        if meta.get("deletionTimestamp") and added:
            raise _error(422, "Invalid", "cannot add finalizers to an object being deleted")
        ignored = {"metadata", "status"} if has_status else {"metadata"}
        if {k: v for k, v in new.items() if k not in ignored} != {
            k: v for k, v in old.items() if k not in ignored
        }:
            meta["generation"] = old["metadata"].get("generation", 0) + 1
        return self._store(spec, key, old, new)

    def _store(self, spec: ResourceSpec, key: Any, old: Obj | None, new: Obj | None) -> Obj:
        """Persist a new state (``None`` deletes), bump the resourceVersion, notify watchers.

        Returns the stored state. A write that changes nothing is not stored at all: the real
        server neither bumps the resourceVersion nor emits an event then, and kopf relies on it.
        """
        if new is not None:
            meta = new["metadata"]
            for field in _OMIT_EMPTY_META:
                if field in meta and not meta[field]:
                    del meta[field]
            meta["resourceVersion"] = old["metadata"]["resourceVersion"] if old else None
            if new == old:
                return old
        # Releasing the last finalizer of an object being deleted deletes it in the same write.
        state = new if new is not None else old
        assert state is not None
        meta = state["metadata"]
        gone = new is None or bool(meta.get("deletionTimestamp") and not meta.get("finalizers"))
        self._rv += 1
        final = copy.deepcopy(state)
        final["metadata"]["resourceVersion"] = str(self._rv)
        if key in self._objects:
            self._objects[key].history.append(final)
            del self._objects[key].history[: -self.history_limit]
        else:
            self._objects[key] = final
        if gone:
            self._objects[key].delete()  # kmock's soft deletion: the history stays for asserts
        kind = "DELETED" if gone else "ADDED" if old is None else "MODIFIED"
        self._publish(spec, kind, old, final)
        return final

    def _publish(self, spec: ResourceSpec, kind: str, old: Obj | None, new: Obj) -> None:
        if len(self._log) == self._log.maxlen:
            self._dropped_rv = self._log[0][0]
        self._log.append((self._rv, spec.ref, kind, old, new))
        for watcher in self._watchers:
            if watcher.resource == spec.ref:
                event = self._event(watcher.accepts, kind, old, new)
                if event is not None:
                    watcher.queue.put_nowait(event)

    @staticmethod
    def _event(accepts: Callable[[Obj], bool], kind: str, old: Obj | None, new: Obj) -> Obj | None:
        # A selector-filtered watch sees objects enter (ADDED) and leave (DELETED) its selection.
        was, now = old is not None and accepts(old), accepts(new)
        if kind == "MODIFIED" and was != now:
            kind = "ADDED" if now else "DELETED"
        return {"type": kind, "object": new} if (was or now) else None


# --- serving over HTTP --------------------------------------------------------------------------


def write_kubeconfig(url: str, path: str | os.PathLike[str], *, namespace: str = "default") -> Path:
    """Write a kubeconfig for ``url`` that kopf, ``kubernetes`` and kubectl accept."""
    name = "cloudpilot-emulator"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": name,
        "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": url}}],
        "users": [{"name": name, "user": {"token": "emulator-token"}}],  # any token is accepted
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}
        ],
    }
    path = Path(path)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@dataclasses.dataclass(frozen=True)
class ServedCluster:
    """A running emulator: its base URL (``http://127.0.0.1:PORT``) and its state."""

    url: str
    emulator: ClusterEmulator

    def write_kubeconfig(self, path: str | os.PathLike[str], *, namespace: str = "default") -> Path:
        return write_kubeconfig(self.url, path, namespace=namespace)


def _loopback(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(host)
    if not address.is_loopback:
        raise ValueError(f"the emulator serves only loopback addresses, not {host!r}")
    return address


@contextlib.asynccontextmanager
async def serve_cluster(
    *, host: str = "127.0.0.1", port: int = 0, emulator: ClusterEmulator | None = None
) -> AsyncIterator[ServedCluster]:
    """Serve an emulator over HTTP on a loopback address, in the current event loop.

    It uses aiohttp directly rather than ``kmock.Server``, which also patches aiohttp's DNS
    resolver for the whole process (and must be exited in LIFO order across all threads).
    """
    address = _loopback(host)
    emulator = emulator if emulator is not None else ClusterEmulator()
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    async with emulator:
        emulator._closed = False  # in case it was served and closed before
        # Handler cancellation ends the watch streams of clients that disconnect.
        server = aiohttp.web.Server(emulator, handler_cancellation=True)
        runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
        with socket.socket(family) as sock:
            try:
                sock.bind((host, port))
                await runner.setup()
                await aiohttp.web.SockSite(runner, sock).start()
                netloc = f"[{host}]" if address.version == 6 else host
                url = f"http://{netloc}:{sock.getsockname()[1]}"
                yield ServedCluster(url=url, emulator=emulator)
            finally:
                emulator.close()  # end the watch streams first, or the server waits for them
                await runner.cleanup()


class ClusterEmulatorThread(BackgroundServer):
    """Serve an emulator from its own event loop in a daemon thread (for sync code and kopf).

    Usage::

        with ClusterEmulatorThread() as cluster:
            kubernetes.config.load_kube_config(config_file=str(cluster.kubeconfig_path))

    The emulator's state belongs to that thread's loop: inspect it with :meth:`call`.
    """

    description = "the Kubernetes emulator"

    def __init__(
        self,
        emulator: ClusterEmulator | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        kubeconfig_path: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        _loopback(host)
        super().__init__()
        self.start_timeout = self.stop_timeout = timeout
        self.emulator = emulator if emulator is not None else ClusterEmulator()
        self._host, self._port, self._timeout = host, port, timeout
        self._kubeconfig_path = None if kubeconfig_path is None else Path(kubeconfig_path)
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the emulator is not running")
        return self._url

    @property
    def kubeconfig_path(self) -> Path:
        if self._kubeconfig_path is None or self._url is None:
            raise RuntimeError("the emulator is not running")
        return self._kubeconfig_path

    def start(self) -> Self:
        if self._started:
            raise RuntimeError("the emulator thread can be started only once")
        self._started = True
        super().start()
        if self._kubeconfig_path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="cloudpilot-kube-")
            self._kubeconfig_path = Path(self._tmpdir.name) / "kubeconfig"
        write_kubeconfig(self.url, self._kubeconfig_path)
        return self

    def stop(self) -> None:
        super().stop()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
        self._url = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        was_running = self._url is not None
        self.stop()
        if was_running and self._error is not None and exc is None:  # e.g. kmock's strict=True
            raise RuntimeError("the Kubernetes emulator failed") from self._error

    def _serve(self, ready: Callable[[], None]) -> None:
        asyncio.run(self._main(ready))

    def _shutdown(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                self._loop.call_soon_threadsafe(self._stop.set)

    async def _main(self, ready: Callable[[], None]) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with serve_cluster(host=self._host, port=self._port, emulator=self.emulator) as s:
            self._url = s.url
            ready()
            await self._stop.wait()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` in the emulator's loop (e.g. to read ``emulator.objects`` safely)."""
        if self._loop is None:
            raise RuntimeError("the emulator is not running")

        async def wrapper() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(self._timeout)


def main(argv: list[str] | None = None) -> int:
    """``python -m cloudpilot_devtools.kube_emulator --kubeconfig PATH``: serve on loopback
    in a process of its own until SIGTERM/SIGINT (benchmarks that must not share a GIL
    with it). Prints the URL once serving."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--request-log",
        type=int,
        default=50,
        help="requests kept for inspection; kmock matches every request against the whole "
        "log, so a long one makes each request slower (default 50)",
    )
    args = parser.parse_args(argv)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        emulator = ClusterEmulator(request_log_limit=args.request_log)
        async with serve_cluster(host=args.host, port=args.port, emulator=emulator) as served:
            served.write_kubeconfig(args.kubeconfig)
            print(served.url, flush=True)
            await stop.wait()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
