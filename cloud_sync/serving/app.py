"""The ASGI application: ``POST /v1/predict``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from edgec.compiler.errors import require

from .batching import DynamicBatcher
from .drift import DriftTracker
from .host import ModelHost
from .metrics import ServerMetrics
from .validate import BadRequest, decode, encode, validate

log = logging.getLogger("edgec.serve")


@dataclass(frozen=True)
class ServeOptions:
    """Server settings (validated by the CLI)."""

    max_batch: int = 16
    max_wait_ms: float = 5.0
    workers: int = 1
    max_body_bytes: int = 16 * 1024 * 1024
    max_request_batch: int = 256


class ServerState:
    """Everything the handlers share: host, batcher, metrics, drift."""

    def __init__(self, host: ModelHost, options: ServeOptions) -> None:
        self.host = host
        self.options = options
        self.metrics = ServerMetrics()
        self.batcher = DynamicBatcher(host, self.metrics, options.max_batch, options.max_wait_ms, options.workers)
        self.drift = DriftTracker(host.current.manifest.model_extra.get("input_stats") if host.current.manifest.model_extra else None)
        self.ready = True
        self.metrics.set_active(host.current.bundle_id, host.current.sha256)

    follow: Callable[[ServerState], Coroutine[Any, Any, None]] | None = None
    """A coroutine that follows releases and swaps bundles (set by ``edgec serve --store``)."""

    def start_follower(self) -> asyncio.Task[None] | None:
        """Start :attr:`follow` as a background task, if set."""
        return asyncio.create_task(self.follow(self)) if self.follow is not None else None

    def swapped(self) -> None:
        """Refresh what depends on the bundle after a successful swap."""
        extra = self.host.current.manifest.model_extra or {}
        self.drift = DriftTracker(extra.get("input_stats"))
        self.metrics.set_active(self.host.current.bundle_id, self.host.current.sha256)


def create_app(state: ServerState) -> Any:
    """A Starlette app bound to ``state``."""
    require("starlette", "serve", "edgec serve")
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def predict(request: Request) -> Response:
        start = time.perf_counter()
        try:
            body = await _read_body(request, state.options.max_body_bytes)
            kind = request.headers.get("content-type", "application/json")
            specs = state.host.current.inputs
            feed = validate(decode(body, kind, specs), specs, state.options.max_request_batch)
            state.drift.update(feed)
            outputs, bundle_id = await state.batcher.submit(feed)
            payload, media = encode(outputs, kind.split(";")[0].strip().lower())
            response = Response(payload, media_type=media, headers={"x-edgec-bundle": bundle_id})
        except BadRequest as exc:
            state.metrics.errors.labels(reason=exc.reason).inc()
            response = JSONResponse({"error": exc.message}, status_code=exc.status)
        except Exception as exc:  # the model failed: 500, the server stays up
            log.exception("inference failed")
            state.metrics.errors.labels(reason="inference").inc()
            response = JSONResponse({"error": f"inference failed: {type(exc).__name__}: {exc}"}, status_code=500)
        state.metrics.requests.labels(code=str(response.status_code)).inc()
        state.metrics.latency.observe(time.perf_counter() - start)
        return response

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        current = state.host.current
        body = {"ready": state.ready, "bundle": current.bundle_id, "target": current.manifest.target,
                "precision": current.manifest.precision, "sha256": current.sha256}
        return JSONResponse(body, status_code=200 if state.ready else 503)

    async def metrics(request: Request) -> Response:
        for name in state.drift.inputs:
            state.metrics.drift.labels(input=name).set(state.drift.psi(name))
        payload, media = state.metrics.render()
        return Response(payload, media_type=media)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await state.batcher.start()
        follower = state.start_follower()
        try:
            yield
        finally:
            if follower is not None:
                follower.cancel()
            await state.batcher.stop()

    routes = [Route("/v1/predict", predict, methods=["POST"]), Route("/healthz", healthz), Route("/readyz", readyz),
              Route("/metrics", metrics)]
    return Starlette(routes=routes, lifespan=lifespan)


async def _read_body(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, "too_large", f"body of {declared} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, "too_large", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
