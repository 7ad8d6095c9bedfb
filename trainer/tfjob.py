"""Kubeflow TFJob for `twotower train` on a GPU cluster (docs/distributed.md).

`render_tfjob` builds the manifest; `emit_tfjob` prints it as YAML and, when asked,
pipes it to `kubectl apply -f -`. Workers run MultiWorkerMirroredStrategy from the
TF_CONFIG the training operator sets; data and runs live on one shared volume.
"""

import dataclasses
import shutil
import subprocess
import sys
from typing import Any

import yaml

from trainer.distribute import EXIT_BAD_INPUT

# The training operator expects this container name and port name.
CONTAINER = "tensorflow"
PORT = 2222
UID = 10001
LABELS = {"app.kubernetes.io/name": "twotower", "app.kubernetes.io/component": "train"}


@dataclasses.dataclass(frozen=True)
class TFJobSpec:
    """What the manifest is rendered from.

    Attributes:
      image: the trainer image (k8s/training/Dockerfile), pinned by tag or digest.
      replicas: worker pods; worker 0 is the chief.
      gpus: GPUs per worker (0: CPU workers, ring all-reduce).
      config: config file path inside the pod (on the shared volume).
      dataset: dataset directory inside the pod.
      run_dir: run directory inside the pod (shared: every restart resumes from it).
      namespace: Kubernetes namespace.
      name: TFJob name.
      volume_claim: PersistentVolumeClaim (ReadWriteMany) mounted at /data.
      cpu, memory: requests and limits per worker.
      backoff_limit: restarts of retryable failures before the job fails.
      overrides: extra `section.key=value` config overrides.
    """

    image: str
    replicas: int = 2
    gpus: int = 1
    config: str = "/data/config.yaml"
    dataset: str = "/data/dataset"
    run_dir: str = "/data/runs/twotower"
    namespace: str = "default"
    name: str = "twotower-train"
    volume_claim: str = "twotower-data"
    cpu: str = "4"
    memory: str = "16Gi"
    backoff_limit: int = 6
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")
        if self.gpus < 0:
            raise ValueError(f"gpus must be >= 0, got {self.gpus}")
        if not self.image or self.image.endswith(":latest") or ":" not in self.image:
            raise ValueError(f"image must be pinned by a tag or digest, got {self.image!r}")


def _container(spec: TFJobSpec) -> dict[str, Any]:
    command = ["python", "-m", "trainer.train", spec.dataset, spec.run_dir, "--config", spec.config]
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
            "labels": {
                "app.kubernetes.io/name": "twotower",
                "app.kubernetes.io/component": "train",
            },
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
        return EXIT_BAD_INPUT
    done = subprocess.run([kubectl, "apply", "-f", "-"], input=manifest, text=True, check=False)
    return done.returncode
