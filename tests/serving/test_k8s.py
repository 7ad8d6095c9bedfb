"""k8s/serving: Kubernetes schemas, security settings, TF Serving's model config.

Schemas: `kubernetes-validate` (strict, the newest Kubernetes it knows). Security: our
own checks below, always; Checkov's Kubernetes checks too where a `checkov` executable
is installed (it is not a project dependency: its pins clash with TensorFlow's).
"""

import glob
import os
import re
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "..", "k8s", "serving"))
WORKLOADS = ("Deployment",)
DNS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}


def _documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(glob.glob(os.path.join(ROOT, "*.yaml"))):
        if os.path.basename(path) == "kustomization.yaml":
            continue
        with open(path) as f:
            docs += [(os.path.basename(path), d) for d in yaml.safe_load_all(f) if d]
    return docs


def _by_name(kind: str, name: str) -> dict:
    return next(d for _, d in _documents() if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize("name, doc", _documents(), ids=lambda v: v if isinstance(v, str) else "")
def test_manifest_matches_the_kubernetes_schema(name, doc):
    version = kubernetes_validate.utils.latest_version()
    kubernetes_validate.validate(doc, version, strict=True)
    if doc["kind"] == "Namespace":
        assert doc["metadata"]["name"] == "twotower", name
    else:
        assert doc["metadata"].get("namespace") == "twotower", name


def test_kustomization_lists_every_manifest():
    with open(os.path.join(ROOT, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    files = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "*.yaml"))}
    assert set(kustomization["resources"]) == files - {"kustomization.yaml"}
    assert kustomization["namespace"] == "twotower"


def _pods() -> list[tuple[str, dict]]:
    return [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for _, d in _documents()
        if d["kind"] in WORKLOADS
    ]


@pytest.mark.parametrize("name, pod", _pods(), ids=lambda v: v if isinstance(v, str) else "")
def test_pods_run_locked_down(name, pod):
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] >= 10000, name
    assert context["seccompProfile"]["type"] == "RuntimeDefault", name
    assert pod["automountServiceAccountToken"] is False, name
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["readOnlyRootFilesystem"] is True, name
        assert security.get("privileged", False) is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)
        assert container["readinessProbe"] and container["livenessProbe"], name
        assert ":latest" not in container["image"], name
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        # a read-only root needs a writable /tmp, and the model volume is never written
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]], name
        assert mounts["/export"]["readOnly"] is True, name


def test_tf_serving_loads_the_query_tower_with_warmup():
    pod = _by_name("Deployment", "tf-serving-query-tower")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert "--model_config_file=/config/models.config" in args
    assert "--enable_model_warmup=true" in args
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models/query_tower"
    config_map = _by_name("ConfigMap", "tf-serving-config")
    # the official proto parses it: a typo here would stop TF Serving at start-up
    config = text_format.Parse(
        config_map["data"]["models.config"], model_server_config_pb2.ModelServerConfig()
    )
    (model,) = config.model_config_list.config
    assert model.name == "query_tower" and model.base_path == "/export/query_tower"
    assert model.model_version_policy.latest.num_versions == 2
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/export", "/config"}


def test_retrieval_service_is_wired_to_tf_serving_and_autoscaled():
    deployment = _by_name("Deployment", "twotower-retrieval")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["twotower", "serve"]
    assert "--tf-serving=grpc://tf-serving-query-tower:8500" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    service = _by_name("Service", "tf-serving-query-tower")
    assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}
    hpa = _by_name("HorizontalPodAutoscaler", "twotower-retrieval")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "twotower-retrieval"
    assert hpa["spec"]["minReplicas"] >= 2


def test_the_namespace_denies_by_default_but_dns():
    namespace = _by_name("Namespace", "twotower")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    deny = _by_name("NetworkPolicy", "default-deny")
    assert deny["spec"]["podSelector"] == {}
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"]
    (dns,) = deny["spec"]["egress"]
    assert dns["to"] == [DNS_PEER]
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def test_retrieval_takes_only_labelled_clients_and_reaches_only_tf_serving():
    policy = _by_name("NetworkPolicy", "twotower-retrieval")["spec"]
    deployment = _by_name("Deployment", "twotower-retrieval")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    # the one ingress rule names its sources: the client label, in any namespace
    (rule,) = policy["ingress"]
    assert rule["from"] == [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"twotower.io/retrieval-client": "true"}},
        }
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (port,) = container["ports"]  # what the Service's targetPort "http" reaches
    assert (
        rule["ports"]
        == [{"protocol": "TCP", "port": port["containerPort"]}]
        == [{"protocol": "TCP", "port": 8080}]
    )
    tf_serving, dns = policy["egress"]
    assert tf_serving["to"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "tf-serving-query-tower"}}}
    ]
    assert {p["port"] for p in tf_serving["ports"]} == {8500, 8501}
    assert "--tf-serving=grpc://tf-serving-query-tower:8500" in container["args"]
    assert dns["to"] == [DNS_PEER]


def test_tf_serving_takes_only_the_retrieval_service_and_sends_nothing():
    policy = _by_name("NetworkPolicy", "tf-serving-query-tower")["spec"]
    assert policy["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "tf-serving-query-tower"}
    }
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = policy["ingress"]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "twotower-retrieval"}}}
    ]
    assert [p["port"] for p in rule["ports"]] == [8500, 8501]
    assert policy["egress"] == []  # the model comes from the volume, which the node mounts


@pytest.mark.skipif(shutil.which("checkov") is None, reason="checkov is not installed")
def test_checkov_finds_nothing_in_any_manifest():
    # All of k8s/: serving, the preprocessing CronJob (and the TFJob, which checkov skips
    # as a custom resource; tests/distributed/test_tfjob.py checks its pod template).
    result = subprocess.run(
        [
            "checkov",
            "-d",
            os.path.dirname(ROOT),
            "--framework",
            "kubernetes",
            "--compact",
            "--quiet",
            "--skip-download",
            "--output",
            "cli",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    # a path checkov cannot read passes silently: make sure it checked something
    assert re.search(r"Passed checks: [1-9]\d*, Failed checks: 0", result.stdout), result.stdout
