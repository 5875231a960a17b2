"""Prometheus metrics of one server, in their own registry (tests can run several servers)."""

from __future__ import annotations

from typing import Any

from edgec.core.errors import require

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    """Requests, errors, latency, batch sizes, queue depth, active bundle and drift."""

    def __init__(self) -> None:
        prom = require("prometheus_client", "serve", "serving metrics")
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter("edgec_requests", "Prediction requests by HTTP status (499: the client left first)", ["code"], registry=r)
        self.errors = prom.Counter("edgec_request_errors", "Rejected or failed requests by reason", ["reason"], registry=r)
        self.latency = prom.Histogram("edgec_request_latency_seconds", "End-to-end latency of /v1/predict",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = prom.Histogram("edgec_batch_size", "Samples per model run", buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = prom.Gauge("edgec_queue_depth", "Requests waiting for a batch", registry=r)
        self.active_bundle = prom.Gauge("edgec_active_bundle", "1 for the bundle being served (release: its sha256 prefix when following a store; "
                                        "sha256: the model file's)", ["bundle", "release", "sha256"], registry=r)
        self.swaps = prom.Counter("edgec_bundle_swaps", "Bundle swaps by result", ["result"], registry=r)
        self.drift = prom.Gauge("edgec_input_drift_psi", "Population stability index of inputs vs calibration", ["input"], registry=r)
        self._prom = prom

    def set_active(self, bundle: str, sha256: str, release: str = "") -> None:
        """Mark ``bundle`` (of ``release``) as the one served (and no other)."""
        self.active_bundle.clear()
        self.active_bundle.labels(bundle=bundle, release=release, sha256=sha256).set(1)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST

    def sample(self, name: str, labels: dict[str, str] | None = None) -> Any:
        """The current value of one sample (for tests)."""
        return self.registry.get_sample_value(name, labels or {})
