"""The ASGI application: ``POST /v1/predict``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from edgec.core.errors import require
from edgec.core.types import TensorSpec

from .batching import DynamicBatcher
from .drift import DriftTracker
from .host import ModelHost
from .metrics import ServerMetrics
from .validate import BadRequest, DecodeLimits, decode, encode, media_type, validate

log = logging.getLogger("edgec.serve")
T = TypeVar("T")
CLIENT_GONE = 499
"""Status recorded (never sent) for a request whose client disconnected, as nginx logs it."""


@dataclass(frozen=True)
class ServeOptions:
    """Server settings (validated by the CLI).

    Attributes:
        max_body_bytes: largest request body read.
        max_decoded_bytes: most bytes of arrays one request may decode to (bounds zip bombs).
        decode_threads: bodies decoded at once, off the event loop; more wait their turn.
        timeout_head: seconds a connection may take to send a complete request head.
        timeout_body: seconds a request body may take to arrive (else 408).
        timeout_keep_alive: seconds an idle keep-alive connection stays open.
        limit_concurrency: connections plus requests in flight above which uvicorn answers 503.
        max_head_bytes: largest request head (431 above it).
    """

    max_batch: int = 16
    max_wait_ms: float = 5.0
    workers: int = 1
    max_body_bytes: int = 16 * 1024 * 1024
    max_request_batch: int = 256
    max_decoded_bytes: int = 64 * 1024 * 1024
    decode_threads: int = 2
    timeout_head: float = 10.0
    timeout_body: float = 60.0
    timeout_keep_alive: int = 5
    limit_concurrency: int = 256
    max_head_bytes: int = 64 * 1024


class ServerState:
    """Everything the handlers share: host, batcher, metrics, drift."""

    def __init__(self, host: ModelHost, options: ServeOptions) -> None:
        self.host = host
        self.options = options
        self.metrics = ServerMetrics()
        self.batcher = DynamicBatcher(host, self.metrics, options.max_batch, options.max_wait_ms, options.workers)
        self.decoder = ThreadPoolExecutor(max_workers=max(1, options.decode_threads), thread_name_prefix="edgec-decode")
        self.drift = DriftTracker(host.current.manifest.model_extra.get("input_stats") if host.current.manifest.model_extra else None)
        self.ready = True
        self.metrics.set_active(host.current.bundle_id, host.current.sha256, host.current.release_id)

    follow: Callable[[ServerState], Coroutine[Any, Any, None]] | None = None
    """A coroutine that follows releases and swaps bundles (set by ``edgec serve --store``)."""

    def start_follower(self) -> asyncio.Task[None] | None:
        """Start :attr:`follow` as a background task, if set."""
        return asyncio.create_task(self.follow(self)) if self.follow is not None else None

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the decode pool (bounded), keeping the event loop free."""
        return await asyncio.get_running_loop().run_in_executor(self.decoder, fn, *args)

    def swapped(self) -> None:
        """Refresh what depends on the bundle after a successful swap."""
        extra = self.host.current.manifest.model_extra or {}
        self.drift = DriftTracker(extra.get("input_stats"))
        self.metrics.set_active(self.host.current.bundle_id, self.host.current.sha256, self.host.current.release_id)


def create_app(state: ServerState) -> Any:
    """A Starlette app bound to ``state``."""
    require("starlette", "serve", "edgec serve")
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def answer(request: Request) -> Response:
        options = state.options
        body = await _read_body(request, options.max_body_bytes, options.timeout_body)
        kind = request.headers.get("content-type", "application/json")
        feed = await state.off_loop(_parse, body, kind, state.host.current.inputs, options)
        state.drift.update(feed)
        outputs, bundle = await state.batcher.submit(feed)
        payload, media = await state.off_loop(encode, outputs, media_type(kind))
        headers = {"x-edgec-bundle": bundle.bundle_id} | ({"x-edgec-release": bundle.release_id} if bundle.release_id else {})
        return Response(payload, media_type=media, headers=headers)

    async def predict(request: Request) -> Response:
        start = time.perf_counter()
        try:
            response = await answer(request)
        except BadRequest as exc:
            state.metrics.errors.labels(reason=exc.reason).inc()
            headers = {"connection": "close"} if exc.reason in ("too_large", "body_timeout") else None
            response = JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)
        except ClientDisconnect:  # nobody to answer; not the server's failure
            state.metrics.errors.labels(reason="client_disconnected").inc()
            response = Response(status_code=CLIENT_GONE)
        except Exception as exc:  # the model failed (or a bug, logged with its traceback): 500, the server stays up
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
                "precision": current.manifest.precision, "sha256": current.sha256,
                "release": current.release.to_json() if current.release is not None else None}
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
            state.decoder.shutdown(wait=False, cancel_futures=True)

    routes = [Route("/v1/predict", predict, methods=["POST"]), Route("/healthz", healthz), Route("/readyz", readyz),
              Route("/metrics", metrics)]
    return Starlette(routes=routes, lifespan=lifespan)


def uvicorn_config(app: Any, options: ServeOptions, host: str, port: int) -> Any:
    """uvicorn's settings for ``app``: its timeouts and limits, and the request-head guard it lacks.

    Raises:
        MissingDependencyError: uvicorn is not installed.
    """
    uvicorn = require("uvicorn", "serve", "edgec serve")
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    from .guard import guarded_protocol

    protocol = guarded_protocol(AutoHTTPProtocol, options.timeout_head, options.max_head_bytes)
    return uvicorn.Config(app, host=host, port=port, log_level="warning", http=protocol, ws="none",
                          timeout_keep_alive=options.timeout_keep_alive, limit_concurrency=options.limit_concurrency,
                          h11_max_incomplete_event_size=options.max_head_bytes)


def _parse(body: bytes, kind: str, specs: tuple[TensorSpec, ...], options: ServeOptions) -> dict[str, np.ndarray]:
    limits = DecodeLimits(options.max_request_batch, options.max_decoded_bytes)
    return validate(decode(body, kind, specs, limits), specs, options.max_request_batch)


async def _read_body(request: Any, limit: int, timeout: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, "too_large", f"body of {declared} bytes exceeds the limit of {limit}")
    try:
        return await asyncio.wait_for(_read_chunks(request, limit), timeout)
    except TimeoutError:
        raise BadRequest(408, "body_timeout", f"the body did not arrive within {timeout:g} s (--timeout-body)") from None


async def _read_chunks(request: Any, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, "too_large", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
