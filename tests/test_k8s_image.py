"""k8s/Dockerfile: the one image every workload under k8s/ runs, and what the manifests
expect to find inside it.

No Docker engine is at hand, so the image's `/app` is laid out here as the Dockerfile's
COPY lines lay it out, and its wheel is built by the Dockerfile's own command. Two
deployment breaks this file guards against, both once shipped: workloads that named
images nothing builds (the retrieval Deployment's `twotower:0.1.0`, the CronJob's
`registry.example.com/twotower:0.1.0`), and a CronJob whose Beam option named a file
the image does not hold (`--requirements_file=/app/requirements.txt`: Beam refuses the
submission before any worker starts).
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

import pytest
import setuptools
import yaml
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.stager import Stager
from setuptools._distutils.core import run_setup

ROOT = pathlib.Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
DOCKERFILE = K8S / "Dockerfile"
WORKDIR = "/app"
# The Dockerfile's wheel step, run here as written (build isolation off: no index here).
WHEEL_COMMAND = "python -m pip wheel --no-deps --wheel-dir /app/dist ."
STOCK_IMAGES = ("tensorflow/serving:",)  # run as published, not built here


def _instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def _make_image() -> str:
    (image,) = re.findall(r"^IMAGE \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    return image


def _containers() -> list[tuple[str, str, dict]]:
    """(manifest, workload kind, container) of every workload under k8s/."""
    found = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc["kind"] not in ("Deployment", "CronJob", "TFJob"):
                continue
            if doc["kind"] == "CronJob":
                pods = [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
            elif doc["kind"] == "TFJob":
                pods = [r["template"]["spec"] for r in doc["spec"]["tfReplicaSpecs"].values()]
            else:
                pods = [doc["spec"]["template"]["spec"]]
            name = str(path.relative_to(K8S))
            for pod in pods:
                for container in pod.get("initContainers", []) + pod["containers"]:
                    found.append((name, doc["kind"], container))
    return found


def _layout_app(target: pathlib.Path) -> None:
    """`target` as the Dockerfile's COPY lines fill WORKDIR (paths relative to it)."""
    instructions = _instructions()
    assert f"WORKDIR {WORKDIR}" in instructions
    for line in instructions:
        if not line.startswith("COPY "):
            continue
        *sources, destination = line.split()[1:]
        for source in sources:
            into = target / destination
            if len(sources) > 1 or destination.endswith("/"):
                into = into / source
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, into, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, into)


@pytest.fixture(scope="module")
def image_app() -> pathlib.Path:
    """The image's /app after its build steps: the copied sources and the built wheel."""
    with tempfile.TemporaryDirectory() as tmp:
        app = pathlib.Path(tmp) / "app"
        _layout_app(app)
        run = " ".join(line for line in _instructions() if line.startswith("RUN "))
        assert WHEEL_COMMAND in run
        command = WHEEL_COMMAND.replace(WORKDIR, str(app)).split()[1:]
        subprocess.run(
            [sys.executable, *command[:3], "--no-build-isolation", "-q", *command[3:]],
            cwd=app,
            check=True,
        )
        yield app


def test_dockerfile_runs_as_the_pods_non_root_user():
    lines = _instructions()
    assert lines[0].startswith("FROM tensorflow/tensorflow:2.20.0")
    assert "USER 10001:10001" in lines
    assert lines[-1] == 'CMD ["twotower", "--help"]'


def test_dockerfile_copies_every_package_the_image_installs():
    # `pip install .` in the image installs what it was given: a package left out (common
    # and simulator once were) installs nothing, and `twotower` fails on its first import.
    packages = {
        name.split(".")[0]
        for name in setuptools.find_packages(str(ROOT), exclude=["tests*", "build*"])
    }
    assert {"common", "trainer", "twotower"} <= packages
    copied = {line.split()[1] for line in _instructions() if line.startswith("COPY ")}
    assert packages <= copied, sorted(packages - copied)


def test_every_workload_runs_the_image_make_builds():
    image = _make_image()
    version = run_setup(str(ROOT / "setup.py"), stop_after="init").get_version()
    assert image.endswith(f"/twotower:{version}")
    ours = {}
    for manifest, kind, container in _containers():
        if container["image"].startswith(STOCK_IMAGES):
            continue
        assert container["image"] == image, (manifest, container["name"])
        ours[kind] = manifest
    assert ours == {
        "TFJob": "training/tfjob.yaml",
        "Deployment": "serving/retrieval-deployment.yaml",
        "CronJob": "preprocess-cronjob.yaml",
    }
    kustomization = yaml.safe_load((K8S / "serving" / "kustomization.yaml").read_text())
    (entry,) = kustomization["images"]
    assert f"{entry['name']}:{entry['newTag']}" == image


def test_image_wheel_holds_every_package(image_app):
    distribution = run_setup(str(ROOT / "setup.py"), stop_after="init")
    (wheel,) = (image_app / "dist").iterdir()
    expected = f"{distribution.get_name()}-{distribution.get_version()}-py3-none-any.whl"
    assert wheel.name == expected
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
    assert {"common", "pipelines", "simulator", "trainer", "serving", "twotower"} <= top


def test_cronjob_beam_options_stage_from_the_image(image_app, tmp_path):
    # What Beam does with the CronJob's options when it submits: stage every file they
    # name. A path the image lacks fails here as it would in the pod.
    (_, _, container) = next(c for c in _containers() if c[1] == "CronJob")
    beam = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--beam-arg=")]
    paths = [a for a in beam if f"={WORKDIR}/" in a]
    assert paths, "the CronJob hands Beam the image's wheel"
    local = [a.replace(f"={WORKDIR}/", f"={image_app}/") for a in paths]
    staged = Stager.create_job_resources(PipelineOptions(local), str(tmp_path))
    names = {os.path.basename(a.split("=", 1)[1]) for a in paths}
    payloads = b"".join(r.role_payload for r in staged)
    assert all(name.encode() in payloads for name in names), names
