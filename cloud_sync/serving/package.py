"""``edgec package``: a Dockerfile and Kubernetes manifests (Deployment with probes, Service, HPA).

The image installs the edgec that built the bundle (its wheel, copied into the build context) and a
``requirements.txt`` in which every package is pinned (see :mod:`edgec.cloud_sync.serving.pins`), on
the bundle's Python version; it copies the bundle, checks it with ``edgec verify`` and runs ``edgec
serve`` on it. The Deployment's readiness probe hits ``/readyz`` (bundle loaded and its golden parity
passed) and the liveness probe ``/healthz``. Files appear atomically: written to a temporary
directory and renamed into ``--out``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgec.core.bundle import load_manifest
from edgec.core.errors import ConfigError, require

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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


def dockerfile(bundle_name: str, wheel: str, python: str, port: int) -> str:
    """A slim image with the pinned requirements and edgec's wheel (nothing resolved at build time)."""
    return (
        f"# Serves {bundle_name} with the edgec that built it ({wheel}) and pinned packages (requirements.txt).\n"
        f"FROM python:{python}-slim\n"
        f"COPY requirements.txt {wheel} /tmp/edgec/\n"
        "RUN pip install --no-cache-dir --no-deps -r /tmp/edgec/requirements.txt \\\n"
        f" && pip install --no-cache-dir --no-deps /tmp/edgec/{wheel} \\\n"
        " && pip check && rm -rf /tmp/edgec\n"
        f"COPY {bundle_name}/ /bundle/\n"
        "RUN edgec verify /bundle\n"
        f"EXPOSE {port}\n"
        "USER 65534\n"
        'ENTRYPOINT ["edgec"]\n'
        f'CMD ["serve", "/bundle", "--host", "0.0.0.0", "--port", "{port}"]\n'
    )


def _check(bundle: Path, out: Path, force: bool) -> Any:
    """The bundle's manifest, once the bundle and ``out`` are fit for packaging.

    Raises:
        ConfigError: see :func:`write_package`.
    """
    manifest = load_manifest(bundle)
    served_extra(manifest.target)
    if not SAFE_NAME.fullmatch(bundle.name):
        raise ConfigError(f"bundle folder name {bundle.name!r} cannot be copied by a Dockerfile; "
                          "rename it to letters, digits, '.', '_' and '-'")
    if out.exists() and not force:
        raise ConfigError(f"{out} already exists", hint="pass --force to replace it")
    return manifest


def served_extra(target: str) -> str:
    """The pip extra that runs ``target`` bundles behind ``edgec serve`` (the target's ``extra``).

    Raises:
        ConfigError: the target's bundles are not served (its ``serves`` is false), or it is unknown here.
    """
    from edgec.targets.base import TARGETS

    cls = TARGETS.get(target) if target in TARGETS.names() else None
    if cls is None or not cls.serves:
        served = ", ".join(c.name for c in TARGETS.all() if c.serves)
        raise ConfigError(f"{target} bundles run on devices, not behind an HTTP endpoint; package {served} bundles")
    return cls.extra


def write_package(bundle: Path, out: Path, *, image: str | None = None, port: int = 8080, replicas: int = 2,
                  force: bool = False, wheel: Path | None = None) -> list[Path]:
    """Write ``Dockerfile``, ``requirements.txt``, edgec's wheel, the bundle copy and ``k8s.yaml`` into
    ``out`` atomically.

    Args:
        wheel: the edgec wheel to install; default: built from the running edgec's source tree.

    Raises:
        ConfigError: ``out`` exists (without ``force``), the bundle's target cannot be served, no edgec
            wheel of the bundle's edgec version can be had, or a package the image needs is not
            installed here (its version would be unknown).
    """
    from edgec.cloud_sync.serving import pins

    yaml = require("yaml", "serve", "edgec package")
    manifest = _check(bundle, out, force)
    toolchain = {str(k): str(v) for k, v in manifest.toolchain.items()}
    python = pins.image_python(toolchain)
    name = "".join(c if c.isalnum() else "-" for c in bundle.name.lower()).strip("-")[:63]
    docs = manifests(name, image or f"edgec-serve-{name}:latest", port, replicas)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        built = pins.edgec_wheel(wheel, staging, toolchain.get("edgec"))
        extras = frozenset({"serve", served_extra(manifest.target)})
        (staging / "requirements.txt").write_text(pins.requirements_text(built, extras, toolchain, python))
        shutil.copytree(bundle, staging / bundle.name)
        (staging / "Dockerfile").write_text(dockerfile(bundle.name, built.name, python, port))
        (staging / "k8s.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out / "Dockerfile", out / "requirements.txt", out / built.name, out / "k8s.yaml", out / bundle.name]
