"""``edgec package``: a Dockerfile and Kubernetes manifests (Deployment with probes, Service, HPA).

The image copies the bundle and runs ``edgec serve`` on it; the Deployment's readiness probe hits
``/readyz`` (bundle loaded and its golden parity passed) and the liveness probe ``/healthz``. Files
appear atomically: written to a temporary directory and renamed into ``--out``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgec.compiler.bundle import load_manifest
from edgec.compiler.errors import ConfigError, require

EXTRA_FOR_TARGET = {"onnx": "onnx", "openvino": "openvino", "tflite": "tflite", "tensorrt": "tensorrt"}


def manifests(name: str, image: str, port: int, replicas: int) -> list[dict[str, Any]]:
    """Deployment, Service and HorizontalPodAutoscaler for one served bundle."""
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "edgec"}

    def probe(path: str, delay: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, "initialDelaySeconds": delay, "periodSeconds": 10,
                "timeoutSeconds": 2, "failureThreshold": 3}

    container = {
        "name": "serve", "image": image, "imagePullPolicy": "IfNotPresent",
        "args": ["serve", "/bundle", "--host", "0.0.0.0", "--port", str(port)],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": probe("/readyz", 5), "livenessProbe": probe("/healthz", 10),
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels, "annotations": {"prometheus.io/scrape": "true",
                                                                             "prometheus.io/port": str(port),
                                                                             "prometheus.io/path": "/metrics"}},
                              "spec": {"containers": [container]}}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name, "labels": labels},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "minReplicas": replicas, "maxReplicas": max(replicas, 10),
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]},
    }
    return [deployment, service, hpa]


def dockerfile(bundle_name: str, extra: str, port: int) -> str:
    """A slim image that installs edgec with the target's runtime and serves the bundle."""
    return (
        "FROM python:3.11-slim\n"
        f"RUN pip install --no-cache-dir 'edgec[serve,{extra}]'\n"
        f"COPY {bundle_name}/ /bundle/\n"
        "RUN edgec verify /bundle\n"
        f"EXPOSE {port}\n"
        "USER 65534\n"
        'ENTRYPOINT ["edgec"]\n'
        f'CMD ["serve", "/bundle", "--host", "0.0.0.0", "--port", "{port}"]\n'
    )


def write_package(bundle: Path, out: Path, *, image: str | None = None, port: int = 8080, replicas: int = 2,
                  force: bool = False) -> list[Path]:
    """Write ``Dockerfile``, the bundle copy and ``k8s.yaml`` into ``out`` atomically.

    Raises:
        ConfigError: ``out`` exists (without ``force``) or the bundle's target cannot be served.
    """
    yaml = require("yaml", "serve", "edgec package")
    manifest = load_manifest(bundle)
    if manifest.target not in EXTRA_FOR_TARGET:
        raise ConfigError(f"{manifest.target} bundles run on devices, not behind an HTTP endpoint; package onnx or openvino bundles")
    if out.exists() and not force:
        raise ConfigError(f"{out} already exists", hint="pass --force to replace it")
    name = "".join(c if c.isalnum() else "-" for c in bundle.name.lower()).strip("-")[:63]
    docs = manifests(name, image or f"edgec-serve-{name}:latest", port, replicas)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        shutil.copytree(bundle, staging / bundle.name)
        (staging / "Dockerfile").write_text(dockerfile(bundle.name, EXTRA_FOR_TARGET[manifest.target], port))
        (staging / "k8s.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out / "Dockerfile", out / "k8s.yaml", out / bundle.name]
