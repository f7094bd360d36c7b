# mypy: disable-error-code="import-not-found,import-untyped,untyped-decorator"
"""What the OpenStack peer adds to mimic: Neutron's network listing, and token checks.

Runs INSIDE the peer venv, imported by ``mimic_runner.py`` (standard library + Twisted).

Why not a real Neutron: ``neutron`` (PyPI, 29.0.0) installs, but its server needs a
database its migrations support (MySQL or PostgreSQL: they alter columns and drop
constraints, which SQLite cannot), an oslo.messaging bus for its ML2 plugin, and a
mechanism driver (OVN's ovsdb-server or the Open vSwitch agent). None of those is on
these machines. libcloud uses two Neutron calls to resolve ``name:`` networks, and those
are served here, with Neutron's JSON shape:

* ``GET /neutron/v2.0/networks`` -> ``{"networks": [...]}`` (every call counted);
* ``GET /neutron/v2.0/networks/<id>`` -> ``{"network": {...}}`` or 404.

libcloud's default OpenStack driver (``api_version`` 1.1, what the seed's options give)
does not call Neutron: it lists networks through Nova's ``os-networks`` proxy (deprecated
in Nova, still answered without a microversion), ``{"networks": [{"id", "label", "cidr"}]}``.
That proxy is served too, from the same networks and counted apart, so both drivers are
tested against one set of networks.

The parent registers ``http://127.0.0.1:<port>/neutron`` in keystone's catalogue as type
``network``, name ``neutron``, which is where libcloud's OpenStack driver looks.

Control routes (tests only, never token-checked):

* ``POST /cloudpilot-peer/neutron/networks`` ``{"name": ..., "id": optional}`` adds one;
* ``DELETE /cloudpilot-peer/neutron/networks`` removes them all and zeroes the counters;
* ``GET /cloudpilot-peer/stats`` -> how often networks were listed, and every token that
  reached Nova or Neutron (a digest, never the token), with its user, auth methods,
  issue and expiry times, and how many requests were refused;
* ``POST /cloudpilot-peer/keystone`` ``{"url": ...}`` turns token checking on (keystone's
  port is only known after mimic has started);
* ``POST /cloudpilot-peer/nova/limits`` ``{"maxTotalInstances": n, ..., "otherInstances":
  n}`` sets the project's quota as Nova's ``GET /limits`` reports it (``DELETE`` resets it
  to mimic's canned one); ``GET /limits`` counts the tenant's live servers as in use.

Token checks: like keystonemiddleware in front of a real Nova, each token is validated
once with keystone (``GET /v3/auth/tokens``, the token validating itself) and remembered
with its expiry; a request without a token, with one keystone does not know, or with one
past its ``expires_at`` gets 401 and Nova's error body.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from typing import Any

PROTECTED_PREFIXES = (b"/mimicking/nova/", b"/neutron/")
"""Paths that need a token: Nova and Neutron, not mimic's control plane nor ours."""

NOVA_NETWORKS = re.compile(rb"^/mimicking/nova/[^/]+/v2/[^/]+/os-networks(/(?P<id>[^/?]+))?/?$")
"""Nova's network proxy, which mimic lacks: answered before mimic sees the request."""

NOVA_LIMITS = re.compile(rb"^/mimicking/nova/(?P<region>[^/]+)/v2/(?P<tenant>[^/]+)/limits/?$")
"""Nova's ``GET /limits``: mimic's is a fixed canned answer whose usage never moves, so it
is answered here, with the instances the tenant really has."""

DEFAULT_ABSOLUTE = {
    "maxTotalInstances": 200,
    "maxTotalCores": -1,
    "maxTotalRAMSize": 256000,
    "totalCoresUsed": 0,
    "totalRAMUsed": 0,
}
"""mimic's canned quota; cores and RAM in use are not counted (0) unless a test sets them."""

UNAUTHORIZED = json.dumps(
    {
        "error": {
            "message": "The request you have made requires authentication.",
            "code": 401,
            "title": "Unauthorized",
        }
    }
).encode()

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _epoch(stamp: str) -> float:
    """keystone's ``2026-12-02T22:30:15.000000Z`` as seconds since the epoch."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _json(request: Any, body: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body).encode()


def _read(request: Any) -> dict[str, Any]:
    raw = request.content.read()
    return json.loads(raw) if raw.strip() else {}


class TokenGuard:
    """Token checks in front of Nova and Neutron, and the state of the Neutron routes."""

    def __init__(self) -> None:
        self.keystone_url: str | None = None
        self.tokens: dict[str, dict[str, Any]] = {}
        """Token digest -> what keystone said about it (and when it was first used)."""
        self.refused = 0
        self.networks: list[dict[str, Any]] = []
        self.network_lists = 0
        self.nova_network_lists = 0
        self.absolute: dict[str, int] = dict(DEFAULT_ABSOLUTE)
        self.other_instances = 0
        """Instances of the project that are not in mimic (another tool's, say)."""
        self.limit_reads = 0
        self.count_servers: Any = None
        """``(region, tenant) -> int``: the tenant's live servers (set by mimic_runner)."""

    # -- token checks ----------------------------------------------------------------------

    def _validate(self, token: str) -> dict[str, Any] | None:
        """keystone's view of ``token`` (cached), or ``None`` if it does not accept it."""
        digest = hashlib.sha256(token.encode()).hexdigest()[:16]
        known = self.tokens.get(digest)
        if known is None:
            url = f"{self.keystone_url}/v3/auth/tokens"
            headers = {"X-Auth-Token": token, "X-Subject-Token": token}
            try:
                # Only the loopback keystone URL the parent registered.
                request = urllib.request.Request(url, headers=headers)  # noqa: S310
                with _OPENER.open(request, timeout=10) as answer:
                    body = json.loads(answer.read())["token"]
            except (urllib.error.URLError, KeyError, ValueError):
                return None
            known = {
                "digest": digest,
                "user_id": body["user"]["id"],
                "methods": body.get("methods", []),
                "application_credential": (body.get("application_credential") or {}).get("id"),
                "issued_at": _epoch(body["issued_at"]),
                "expires_at": _epoch(body["expires_at"]),
                "first_used": time.time(),
                "refused": 0,
            }
            self.tokens[digest] = known
        if time.time() >= known["expires_at"]:
            known["refused"] += 1
            return None
        return known

    def allowed(self, request: Any) -> bool:
        if self.keystone_url is None:
            return True
        if not any(request.path.startswith(prefix) for prefix in PROTECTED_PREFIXES):
            return True
        token = request.getHeader(b"x-auth-token")
        if token and self._validate(token.decode("ascii", errors="replace")) is not None:
            return True
        self.refused += 1
        return False

    def wrap(self, inner: Any) -> Any:
        """A leaf resource that checks the token, then lets ``inner`` (Klein) answer."""
        from twisted.web.resource import Resource

        guard = self

        class Guarded(Resource):  # type: ignore[misc]
            isLeaf = True

            def render(self, request: Any) -> Any:
                if not guard.allowed(request):
                    request.setResponseCode(401)
                    request.setHeader(b"content-type", b"application/json")
                    return UNAUTHORIZED
                limits = NOVA_LIMITS.match(request.path)
                if limits and request.method == b"GET":
                    return guard.nova_limits(
                        request, limits.group("region"), limits.group("tenant")
                    )
                proxied = NOVA_NETWORKS.match(request.path)
                if proxied and request.method == b"GET":
                    return guard.nova_networks(request, proxied.group("id"))
                return inner.render(request)

        return Guarded()

    def nova_networks(self, request: Any, network_id: bytes | None) -> bytes:
        """Nova's ``os-networks`` proxy: Neutron's networks in nova-network's shape."""
        shown = [{"id": n["id"], "label": n["name"], "cidr": None} for n in self.networks]
        if network_id is None:
            self.nova_network_lists += 1
            return _json(request, {"networks": shown})
        for network in shown:
            if network["id"] == network_id.decode():
                return _json(request, {"network": network})
        return _json(request, {"itemNotFound": {"message": "Network not found", "code": 404}}, 404)

    def nova_limits(self, request: Any, region: bytes, tenant: bytes) -> bytes:
        """Nova's ``/limits``: the quota a test set, and the tenant's live servers (plus
        :attr:`other_instances`) as ``totalInstancesUsed``, as a real Nova counts them."""
        self.limit_reads += 1
        absolute = dict(self.absolute)
        ours = self.count_servers(region.decode(), tenant.decode()) if self.count_servers else 0
        absolute["totalInstancesUsed"] = ours + self.other_instances
        return _json(request, {"limits": {"rate": [], "absolute": absolute}})


def add_routes(app: Any, guard: TokenGuard) -> None:
    """Neutron's network routes and the control routes, on mimic's Klein app."""

    @app.route("/neutron/v2.0/networks", methods=["GET"])
    def list_networks(root: Any, request: Any) -> bytes:
        guard.network_lists += 1
        return _json(request, {"networks": guard.networks})

    @app.route("/neutron/v2.0/networks/<string:network_id>", methods=["GET"])
    def get_network(root: Any, request: Any, network_id: str) -> bytes:
        for network in guard.networks:
            if network["id"] == network_id:
                return _json(request, {"network": network})
        body = {"NeutronError": {"type": "NetworkNotFound", "message": "Network not found"}}
        return _json(request, body, 404)

    @app.route("/cloudpilot-peer/neutron/networks", methods=["POST"])
    def add_network(root: Any, request: Any) -> bytes:
        wanted = _read(request)
        network = {
            "id": wanted.get("id") or str(uuid.uuid4()),
            "name": wanted["name"],
            "status": "ACTIVE",
            "admin_state_up": True,
            "shared": False,
            "subnets": [],
            "router:external": bool(wanted.get("external", False)),
        }
        guard.networks.append(network)
        return _json(request, {"network": network}, 201)

    @app.route("/cloudpilot-peer/neutron/networks", methods=["DELETE"])
    def clear_networks(root: Any, request: Any) -> bytes:
        guard.networks.clear()
        guard.network_lists = guard.nova_network_lists = 0
        return _json(request, {}, 200)

    @app.route("/cloudpilot-peer/nova/limits", methods=["POST"])
    def set_limits(root: Any, request: Any) -> bytes:
        wanted = _read(request)
        guard.other_instances = int(wanted.pop("otherInstances", guard.other_instances))
        guard.absolute.update({k: int(v) for k, v in wanted.items()})
        return _json(request, {"absolute": guard.absolute, "otherInstances": guard.other_instances})

    @app.route("/cloudpilot-peer/nova/limits", methods=["DELETE"])
    def reset_limits(root: Any, request: Any) -> bytes:
        guard.absolute = dict(DEFAULT_ABSOLUTE)
        guard.other_instances = guard.limit_reads = 0
        return _json(request, {}, 200)

    @app.route("/cloudpilot-peer/keystone", methods=["POST"])
    def set_keystone(root: Any, request: Any) -> bytes:
        guard.keystone_url = _read(request)["url"]
        return _json(request, {"url": guard.keystone_url})

    @app.route("/cloudpilot-peer/stats", methods=["GET"])
    def stats(root: Any, request: Any) -> bytes:
        body = {
            "network_lists": guard.network_lists,
            "nova_network_lists": guard.nova_network_lists,
            "tokens": sorted(guard.tokens.values(), key=lambda t: t["issued_at"]),
            "refused": guard.refused,
            "limit_reads": guard.limit_reads,
        }
        return _json(request, body)
