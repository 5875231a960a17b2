"""Serving bundles behind HTTP: ``edgec serve`` (dynamic batching, validation, metrics, drift, hot-swap)
and ``edgec package`` (Dockerfile and Kubernetes manifests)."""
