"""Kubeflow TFJob for `twotower train` on a GPU cluster (docs/distributed.md).

`render_tfjob` builds the manifest; `emit_tfjob` prints it as YAML and, when asked,
pipes it to `kubectl apply -f -`. Workers run MultiWorkerMirroredStrategy from the
TF_CONFIG the training operator sets; data and runs live on one shared volume. The job
runs in its own namespace, whose ServiceAccount, NetworkPolicies and volume claim are in
k8s/training/ (`kubectl apply -k k8s/training`).
"""

import dataclasses
import re
import shutil
import subprocess
import sys
from typing import Any

import yaml

from common import exit_codes
from common.settings import ConfigError, Settings, setting

# The training operator expects this container name and port name.
CONTAINER = "tensorflow"
PORT = 2222
UID = 10001
# k8s/training/network-policy.yaml selects the workers by these labels.
LABELS = {"app.kubernetes.io/name": "twotower", "app.kubernetes.io/component": "train"}
# Kubernetes object names: a namespace is a DNS label, a ServiceAccount a DNS subdomain.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)


@dataclasses.dataclass(frozen=True)
class TFJobSpec(Settings):
    """What the manifest is rendered from (`twotower train --emit-tfjob` flags)."""

    image: str = setting("", "the twotower image (k8s/Dockerfile), pinned by tag or digest")
    replicas: int = setting(2, "worker pods (worker 0 is the chief)", min=1)
    gpus: int = setting(1, "GPUs per worker (0: CPU workers, ring all-reduce)", min=0)
    pod_config: str = setting("/data/config.yaml", "config file path inside the pods")
    dataset: str = setting("/data/dataset", "dataset directory inside the pods")
    run_dir: str = setting(
        "/data/runs/twotower", "run directory inside the pods (shared: restarts resume from it)"
    )
    namespace: str = setting(
        "twotower-training", "Kubernetes namespace of the job (k8s/training/namespace.yaml)"
    )
    service_account: str = setting(
        "twotower-train", "ServiceAccount of the worker pods (k8s/training/service-account.yaml)"
    )
    name: str = setting("twotower-train", "TFJob name")
    volume_claim: str = setting(
        "twotower-data", "PersistentVolumeClaim (ReadWriteMany) mounted at /data"
    )
    cpu: str = setting("4", "CPU request and limit per worker")
    memory: str = setting("16Gi", "memory request and limit per worker")
    backoff_limit: int = setting(6, "restarts of retryable failures before the job fails", min=0)
    overrides: tuple[str, ...] = setting((), "extra section.key=value config overrides")

    def check(self) -> None:
        if not self.image or self.image.endswith(":latest") or ":" not in self.image:
            raise ConfigError(f"must be pinned by a tag or digest, got {self.image!r}", "image")
        if not _DNS_LABEL.fullmatch(self.namespace):
            raise ConfigError(f"not a Kubernetes namespace name: {self.namespace!r}", "namespace")
        if not _DNS_SUBDOMAIN.fullmatch(self.service_account):
            raise ConfigError(
                f"not a Kubernetes object name: {self.service_account!r}", "service_account"
            )


def _container(spec: TFJobSpec) -> dict[str, Any]:
    command = ["twotower", "train", "--data", spec.dataset, "--run-dir", spec.run_dir]
    command += ["--config", spec.pod_config, "--verbose", "2"]
    for override in spec.overrides:
        command += ["--set", override]
    resources = {"cpu": spec.cpu, "memory": spec.memory}
    limits = dict(resources)
    if spec.gpus:
        limits["nvidia.com/gpu"] = spec.gpus
    return {
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "ports": [{"name": "tfjob-port", "containerPort": PORT}],
        "env": [
            {"name": "TMPDIR", "value": "/tmp"},
            {"name": "HOME", "value": "/tmp"},
            {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "1"},
        ],
        "resources": {"requests": resources, "limits": limits},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def pod_template(spec: TFJobSpec) -> dict[str, Any]:
    """The Worker replicas' pod template (a core PodTemplateSpec)."""
    pod: dict[str, Any] = {
        "serviceAccountName": spec.service_account,
        # the workers never call the Kubernetes API (the operator hands them TF_CONFIG)
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(spec)],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": spec.volume_claim}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "10Gi"}},
        ],
    }
    if spec.gpus:
        pod["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {"metadata": {"labels": dict(LABELS)}, "spec": pod}


def render_tfjob(spec: TFJobSpec) -> dict[str, Any]:
    """The TFJob manifest (kubeflow.org/v1) for `spec`."""
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": dict(LABELS),
        },
        "spec": {
            "runPolicy": {"backoffLimit": spec.backoff_limit, "cleanPodPolicy": "Running"},
            "tfReplicaSpecs": {
                "Worker": {
                    "replicas": spec.replicas,
                    # Exit 1 (bad input/config) fails the job; 137, 143 (killed,
                    # preempted) and 138 (lost peer) restart the pod, which resumes
                    # from run_dir/backup.
                    "restartPolicy": "ExitCode",
                    "template": pod_template(spec),
                }
            },
        },
    }


def tfjob_yaml(spec: TFJobSpec) -> str:
    header = (
        "# Rendered by trainer/tfjob.py (`twotower train --emit-tfjob`); see docs/distributed.md.\n"
    )
    return header + yaml.safe_dump(render_tfjob(spec), sort_keys=False)


def emit_tfjob(spec: TFJobSpec, *, apply: bool = False, kubectl: str = "kubectl") -> int:
    """Prints the manifest; with `apply`, also `kubectl apply -f -`. Returns an exit code."""
    manifest = tfjob_yaml(spec)
    print(manifest, end="")
    if not apply:
        return 0
    if shutil.which(kubectl) is None:
        print(f"twotower train: {kubectl} not found on PATH", file=sys.stderr)
        return exit_codes.BAD_INPUT
    done = subprocess.run([kubectl, "apply", "-f", "-"], input=manifest, text=True, check=False)
    return done.returncode
