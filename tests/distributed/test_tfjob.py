"""k8s/training: the TFJob and its renderer, its namespace, ServiceAccount and
NetworkPolicies, Kubernetes schemas, security settings.

Schemas: `kubernetes-validate` knows core kinds only, so the TFJob's Worker pod template
is validated as a core Pod, and the TFJob's own fields are checked here. Security: our
own check; Checkov reads no pod template inside a TFJob (a custom resource), so it would
pass it without checking anything.
"""

import glob
import os

import kubernetes_validate
import pytest
import yaml

from trainer.tfjob import LABELS, PORT, TFJobSpec, emit_tfjob, render_tfjob, tfjob_yaml

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "..", "k8s", "training"))
IMAGE = "registry.example.com/twotower:0.1.0"


def _load(name: str) -> dict:
    with open(os.path.join(ROOT, name)) as f:
        return yaml.safe_load(f)


def _load_all(name: str) -> list[dict]:
    with open(os.path.join(ROOT, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _pod(tfjob: dict) -> dict:
    template = tfjob["spec"]["tfReplicaSpecs"]["Worker"]["template"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "worker-0"}, **template}


SPECS = [
    TFJobSpec(image=IMAGE),
    TFJobSpec(image=IMAGE, replicas=4, gpus=8, overrides=("training.lr_scaling=sqrt",)),
    TFJobSpec(image=IMAGE, replicas=1, gpus=0, namespace="ml"),
]


def test_checked_in_manifest_is_the_rendered_default():
    assert _load("tfjob.yaml") == render_tfjob(TFJobSpec(image=IMAGE))


@pytest.mark.parametrize("spec", SPECS, ids=["default", "4x8gpu", "cpu"])
def test_worker_pod_matches_the_kubernetes_schema(spec):
    version = kubernetes_validate.utils.latest_version()
    kubernetes_validate.validate(_pod(render_tfjob(spec)), version, strict=True)


def test_shared_volume_claim_matches_the_kubernetes_schema():
    claim = _load("data-pvc.yaml")
    kubernetes_validate.validate(claim, kubernetes_validate.utils.latest_version(), strict=True)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["metadata"]["namespace"] == "twotower-training"  # the job's: pods mount it
    pod = _pod(_load("tfjob.yaml"))["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


@pytest.mark.parametrize("name", ["namespace.yaml", "service-account.yaml", "network-policy.yaml"])
def test_training_manifests_match_the_kubernetes_schema(name):
    version = kubernetes_validate.utils.latest_version()
    for doc in _load_all(name):
        kubernetes_validate.validate(doc, version, strict=True)
        assert "twotower-training" in (doc["metadata"]["name"], doc["metadata"].get("namespace"))


def test_kustomization_lists_every_manifest_but_the_tfjob():
    kustomization = _load("kustomization.yaml")
    files = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "*.yaml"))}
    # the TFJob goes through `twotower train --emit-tfjob --apply`, after these
    assert set(kustomization["resources"]) == files - {"kustomization.yaml", "tfjob.yaml"}
    assert kustomization["namespace"] == "twotower-training"


def test_the_job_runs_in_its_own_namespace_as_its_own_account():
    job = render_tfjob(TFJobSpec(image=IMAGE))
    (namespace, deny) = _load_all("namespace.yaml")
    account = _load("service-account.yaml")
    claim = _load("data-pvc.yaml")
    assert job["metadata"]["namespace"] == namespace["metadata"]["name"] == "twotower-training"
    assert account["metadata"]["namespace"] == claim["metadata"]["namespace"] == "twotower-training"
    assert deny["metadata"]["namespace"] == "twotower-training"
    assert (deny["kind"], deny["spec"]["podSelector"]) == ("NetworkPolicy", {})
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny["spec"]
    pod = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"] == "twotower-train"
    assert account["automountServiceAccountToken"] is False
    other = render_tfjob(TFJobSpec(image=IMAGE, namespace="ml", service_account="ml-trainer"))
    assert other["metadata"]["namespace"] == "ml"
    assert other["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["serviceAccountName"] == (
        "ml-trainer"
    )


def test_workers_reach_each_other_on_the_tfjob_port_only():
    (policy,) = _load_all("network-policy.yaml")
    spec = policy["spec"]
    template = render_tfjob(TFJobSpec(image=IMAGE))["spec"]["tfReplicaSpecs"]["Worker"]["template"]
    # the policy selects the rendered workers, and its peers are those same workers
    assert spec["podSelector"] == {"matchLabels": LABELS}
    assert LABELS.items() <= template["metadata"]["labels"].items()
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    workers = [{"podSelector": {"matchLabels": LABELS}}]
    tf_port = {"protocol": "TCP", "port": PORT}  # 2222: TF_CONFIG's gRPC server
    nccl = {"protocol": "TCP", "port": 32768, "endPort": 60999}  # NCCL's kernel-picked ports
    (ingress,) = spec["ingress"]
    assert ingress == {"from": workers, "ports": [tf_port, nccl]}
    to_workers, dns = spec["egress"]
    assert to_workers == {"to": workers, "ports": [tf_port, nccl]}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}


@pytest.mark.parametrize(
    "field, value", [("namespace", "Team_ML"), ("namespace", ""), ("service_account", "a..b")]
)
def test_bad_kubernetes_names_are_refused(field, value):
    with pytest.raises(ValueError, match=f"{field}: not a Kubernetes"):
        TFJobSpec(image=IMAGE, **{field: value})


@pytest.mark.parametrize("spec", SPECS, ids=["default", "4x8gpu", "cpu"])
def test_tfjob_fields_follow_the_training_operator(spec):
    job = render_tfjob(spec)
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "TFJob")
    assert job["spec"]["runPolicy"]["backoffLimit"] == spec.backoff_limit
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == spec.replicas and worker["restartPolicy"] == "ExitCode"
    (container,) = worker["template"]["spec"]["containers"]
    assert container["name"] == "tensorflow"  # the operator injects TF_CONFIG here
    assert container["ports"] == [{"name": "tfjob-port", "containerPort": 2222}]
    limits = container["resources"]["limits"]
    assert limits.get("nvidia.com/gpu", 0) == spec.gpus
    command = container["command"]
    assert command[:2] == ["twotower", "train"]  # the one entry point, as the docs show it
    assert command[command.index("--data") + 1] == spec.dataset
    assert command[command.index("--run-dir") + 1] == spec.run_dir
    assert command[command.index("--config") + 1] == spec.pod_config
    assert all(o in command for o in spec.overrides)


@pytest.mark.parametrize("spec", SPECS, ids=["default", "4x8gpu", "cpu"])
def test_worker_pods_run_locked_down(spec):
    pod = render_tfjob(spec)["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] >= 10000
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["privileged"] is False and security["capabilities"]["drop"] == ["ALL"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind])
        assert ":latest" not in container["image"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]  # a read-only root needs a writable /tmp
        assert "persistentVolumeClaim" in volumes[mounts["/data"]]


@pytest.mark.parametrize("image", ["trainer", "trainer:latest", ""])
def test_unpinned_image_is_refused(image):
    with pytest.raises(ValueError, match="pinned"):
        TFJobSpec(image=image)


def test_emit_prints_and_applies_with_kubectl(tmp_path, capsys):
    fake = tmp_path / "kubectl"
    received = tmp_path / "applied.yaml"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncat > {received}\n')
    fake.chmod(0o755)
    spec = TFJobSpec(image=IMAGE, replicas=3)
    assert emit_tfjob(spec) == 0
    assert yaml.safe_load(capsys.readouterr().out) == render_tfjob(spec)
    assert emit_tfjob(spec, apply=True, kubectl=str(fake)) == 0
    assert (tmp_path / "args").read_text().split() == ["apply", "-f", "-"]
    assert received.read_text() == tfjob_yaml(spec)
    assert emit_tfjob(spec, apply=True, kubectl=str(tmp_path / "missing")) == 1
