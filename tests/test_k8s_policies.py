"""k8s/: the ServiceAccounts, namespaces and NetworkPolicies the workloads rely on.

Every manifest under k8s/ plus the TFJob `trainer.tfjob.render_tfjob` renders by
default. Structure: every `serviceAccountName` and every namespace is defined by a
manifest, every workload's pods are selected by a policy of their own and by their
namespace's default-deny. Behaviour: `_allowed` evaluates the policies for one
connection the way the NetworkPolicy API defines it (a pod selected by no policy of a
direction is open in that direction; policies add up; a peer with only a podSelector is
in the policy's namespace), and the tests ask it about the connections each component
needs and about ones it must not get.
"""

import dataclasses
import ipaddress
import pathlib
from collections.abc import Mapping

import kubernetes_validate
import pytest
import yaml

from trainer.tfjob import TFJobSpec, render_tfjob

ROOT = pathlib.Path(__file__).resolve().parents[1] / "k8s"
RENDERED = "trainer/tfjob.py render_tfjob (default)"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "TFJob")
NAMESPACE_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by Kubernetes


def _manifests() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(ROOT.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        with open(path) as f:
            name = str(path.relative_to(ROOT))
            docs += [(name, d) for d in yaml.safe_load_all(f) if d]
    return [*docs, (RENDERED, render_tfjob(TFJobSpec(image="registry.example.com/t:0.1.0")))]


MANIFESTS = _manifests()
POLICIES = [d for _, d in MANIFESTS if d["kind"] == "NetworkPolicy"]


def _templates(doc: dict) -> list[dict]:
    """The pod templates of a workload."""
    if doc["kind"] == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]]
    if doc["kind"] == "TFJob":
        return [r["template"] for r in doc["spec"]["tfReplicaSpecs"].values()]
    return [doc["spec"]["template"]]


def _service_account_names(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["serviceAccountName"]] if "serviceAccountName" in node else []
        return found + [n for v in node.values() for n in _service_account_names(v)]
    if isinstance(node, list):
        return [n for v in node for n in _service_account_names(v)]
    return []


@dataclasses.dataclass(frozen=True)
class Peer:
    """One end of a connection: a pod (namespace, labels) or an address outside."""

    namespace: str | None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ip: str | None = None


def _workload(kind: str, name: str) -> Peer:
    doc = next(d for _, d in MANIFESTS if d["kind"] == kind and d["metadata"]["name"] == name)
    (template,) = _templates(doc)
    return Peer(doc["metadata"]["namespace"], template["metadata"]["labels"])


RETRIEVAL = _workload("Deployment", "twotower-retrieval")
TF_SERVING = _workload("Deployment", "tf-serving-query-tower")
PREPROCESS = _workload("CronJob", "twotower-preprocess")
WORKER = _workload("TFJob", "twotower-train")
DNS = Peer("kube-system", {"k8s-app": "kube-dns"})
CLIENT = Peer("shop", {"twotower.io/retrieval-client": "true"})
STRANGER = Peer("shop", {"app": "web"})  # another namespace, no client label
NEIGHBOUR = Peer("twotower", {"app": "debug"})  # the serving namespace, no label
TRAINING_NEIGHBOUR = Peer("twotower-training", {"app": "debug"})
PUBLIC = Peer(None, ip="203.0.113.10")  # e.g. the object store's API
PRIVATE = Peer(None, ip="10.20.0.7")
METADATA_SERVER = Peer(None, ip="169.254.169.254")


def _selects(selector: Mapping, labels: Mapping[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, values = expression["key"], expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[expression["operator"]]
        if not matched:
            return False
    return True


def _peer_matches(peer: Mapping, policy_namespace: str, other: Peer) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False  # pods are named by selectors here, never by their address
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        in_namespace = _selects(peer["namespaceSelector"], {NAMESPACE_LABEL: other.namespace})
    else:
        in_namespace = other.namespace == policy_namespace
    return in_namespace and _selects(peer.get("podSelector", {}), other.labels)


def _port_matches(ports: list | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        assert isinstance(entry["port"], int), f"named port {entry['port']!r}: use the number"
        if entry["port"] <= port <= entry.get("endPort", entry["port"]):
            return True
    return False


def _policy_types(policy: dict) -> list[str]:
    default = ["Ingress", "Egress"] if "egress" in policy["spec"] else ["Ingress"]
    return policy["spec"].get("policyTypes", default)


def _admits(policies, pod: Peer, other: Peer, port: int, protocol: str, direction: str) -> bool:
    """Whether `pod`'s policies of `direction` let it exchange this with `other`."""
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and direction in _policy_types(p)
        and _selects(p["spec"]["podSelector"], pod.labels)
    ]
    if not selecting:
        return True  # not isolated in this direction
    return any(
        (
            not rule.get(peers_key)
            or any(_peer_matches(q, p["metadata"]["namespace"], other) for q in rule[peers_key])
        )
        and _port_matches(rule.get("ports"), port, protocol)
        for p in selecting
        for rule in p["spec"].get(rules_key) or []
    )


def _allowed(
    source: Peer, target: Peer, port: int, protocol: str = "TCP", policies=POLICIES
) -> bool:
    sends = source.namespace is None or _admits(policies, source, target, port, protocol, "Egress")
    takes = target.namespace is None or _admits(policies, target, source, port, protocol, "Ingress")
    return sends and takes


@pytest.mark.parametrize(
    "name, doc",
    [(n, d) for n, d in MANIFESTS if d["kind"] != "TFJob"],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_manifest_matches_the_kubernetes_schema(name, doc):
    # kubernetes-validate knows no TFJob: tests/distributed/test_tfjob.py validates its pod
    kubernetes_validate.validate(doc, kubernetes_validate.utils.latest_version(), strict=True)


def test_every_service_account_is_defined():
    defined = {
        (d["metadata"]["namespace"], d["metadata"]["name"])
        for _, d in MANIFESTS
        if d["kind"] == "ServiceAccount"
    }
    used = {
        (d["metadata"]["namespace"], account)
        for _, d in MANIFESTS
        for account in _service_account_names(d.get("spec", {}))
    }
    assert used == {
        ("twotower", "twotower-serving"),
        ("twotower", "twotower-preprocess"),
        ("twotower-training", "twotower-train"),
    }
    assert used <= defined, f"referenced but not defined: {sorted(used - defined)}"
    for _, doc in MANIFESTS:
        if doc["kind"] == "ServiceAccount":  # none of the pods calls the Kubernetes API
            assert doc["automountServiceAccountToken"] is False, doc["metadata"]["name"]


def test_every_namespace_is_a_manifest_with_a_default_deny():
    namespaces = {d["metadata"]["name"] for _, d in MANIFESTS if d["kind"] == "Namespace"}
    assert namespaces == {"twotower", "twotower-training"}
    for name, doc in MANIFESTS:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") in namespaces, (name, doc["metadata"])
    for namespace in namespaces:
        floors = [
            p["metadata"]["name"]
            for p in POLICIES
            if p["metadata"]["namespace"] == namespace
            and p["spec"]["podSelector"] == {}
            and set(_policy_types(p)) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress")
        ]
        assert floors == ["default-deny"], namespace
        # the floor blocks a pod no component policy selects, both ways
        stray = Peer(namespace, {"app": "debug"})
        assert not _allowed(STRANGER, stray, 8080)
        assert not _allowed(stray, PUBLIC, 443)
        assert _allowed(stray, DNS, 53, "UDP")


def test_every_workload_has_its_own_policy_both_ways():
    owners = {}
    for _, doc in MANIFESTS:
        if doc["kind"] not in WORKLOADS:
            continue
        for template in _templates(doc):
            labels = template["metadata"]["labels"]
            owners[doc["metadata"]["name"]] = [
                p["metadata"]["name"]
                for p in POLICIES
                if p["metadata"]["namespace"] == doc["metadata"]["namespace"]
                and p["spec"]["podSelector"]  # the component's own, not the floor
                and _selects(p["spec"]["podSelector"], labels)
                and set(_policy_types(p)) == {"Ingress", "Egress"}
            ]
    assert owners == {
        "twotower-retrieval": ["twotower-retrieval"],
        "tf-serving-query-tower": ["tf-serving-query-tower"],
        "twotower-preprocess": ["twotower-preprocess"],
        "twotower-train": ["twotower-train-workers"],
    }


def test_every_rule_names_its_peers():
    for policy in POLICIES:
        name = policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress") or []:
            assert rule.get("from") and rule.get("ports"), (name, rule)
        for rule in policy["spec"].get("egress") or []:
            assert rule.get("to") and rule.get("ports"), (name, rule)


@pytest.mark.parametrize(
    "pod",
    [RETRIEVAL, TF_SERVING, PREPROCESS, WORKER],
    ids=["retrieval", "tf-serving", "preprocess", "worker"],
)
@pytest.mark.parametrize("protocol", ["UDP", "TCP"])
def test_components_resolve_names(pod, protocol):
    assert _allowed(pod, DNS, 53, protocol)
    assert not _allowed(pod, DNS, 8080, protocol)


CONNECTIONS = [
    # (source, target, port, allowed)
    ("client -> retrieval", CLIENT, RETRIEVAL, 8080, True),
    ("client -> retrieval, another port", CLIENT, RETRIEVAL, 9090, False),
    ("unlabelled pod elsewhere -> retrieval", STRANGER, RETRIEVAL, 8080, False),
    ("unlabelled pod alongside -> retrieval", NEIGHBOUR, RETRIEVAL, 8080, False),
    ("retrieval -> TF Serving gRPC", RETRIEVAL, TF_SERVING, 8500, True),
    ("retrieval -> TF Serving REST", RETRIEVAL, TF_SERVING, 8501, True),
    ("retrieval -> TF Serving, another port", RETRIEVAL, TF_SERVING, 9000, False),
    ("client -> TF Serving", CLIENT, TF_SERVING, 8500, False),
    ("unlabelled pod alongside -> TF Serving", NEIGHBOUR, TF_SERVING, 8500, False),
    ("preprocessing -> TF Serving", PREPROCESS, TF_SERVING, 8500, False),
    ("TF Serving -> retrieval", TF_SERVING, RETRIEVAL, 8080, False),
    ("TF Serving -> outside", TF_SERVING, PUBLIC, 443, False),
    ("retrieval -> outside", RETRIEVAL, PUBLIC, 443, False),
    ("retrieval -> the workers", RETRIEVAL, WORKER, 2222, False),
    ("preprocessing -> object store (HTTPS)", PREPROCESS, PUBLIC, 443, True),
    ("preprocessing -> outside, plain HTTP", PREPROCESS, PUBLIC, 80, False),
    ("preprocessing -> private address", PREPROCESS, PRIVATE, 443, False),
    ("preprocessing -> metadata server", PREPROCESS, METADATA_SERVER, 80, False),
    ("preprocessing -> retrieval", PREPROCESS, RETRIEVAL, 8080, False),
    ("client -> preprocessing", CLIENT, PREPROCESS, 8080, False),
    ("worker -> worker, TensorFlow gRPC", WORKER, WORKER, 2222, True),
    ("worker -> worker, NCCL", WORKER, WORKER, 40000, True),
    ("worker -> worker, ssh", WORKER, WORKER, 22, False),
    ("preprocessing -> worker", PREPROCESS, WORKER, 2222, False),
    ("client -> worker", CLIENT, WORKER, 2222, False),
    ("unlabelled pod alongside -> worker", TRAINING_NEIGHBOUR, WORKER, 2222, False),
    ("worker -> unlabelled pod alongside", WORKER, TRAINING_NEIGHBOUR, 2222, False),
    ("worker -> outside", WORKER, PUBLIC, 443, False),
    ("worker -> retrieval", WORKER, RETRIEVAL, 8080, False),
]


@pytest.mark.parametrize(
    "source, target, port, expected", [c[1:] for c in CONNECTIONS], ids=[c[0] for c in CONNECTIONS]
)
def test_each_component_gets_the_traffic_it_needs_and_no_more(source, target, port, expected):
    assert _allowed(source, target, port) is expected


def test_the_evaluator_sees_an_open_port():
    # The retrieval policy this replaced: an ingress rule with ports only admits anyone.
    open_rule = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "twotower-retrieval", "namespace": "twotower"},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "twotower-retrieval"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"port": 8080}]}],
        },
    }
    assert _allowed(STRANGER, RETRIEVAL, 8080, policies=[open_rule])
    assert not _allowed(STRANGER, RETRIEVAL, 9090, policies=[open_rule])
    assert _allowed(RETRIEVAL, PUBLIC, 443, policies=[open_rule])  # no egress isolation
    assert _allowed(STRANGER, WORKER, 2222, policies=[])  # nothing selects it: all open
