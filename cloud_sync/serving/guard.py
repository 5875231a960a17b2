"""Bounds uvicorn leaves open: how long a client may take to send a request head, and how big it may grow.

uvicorn (0.54) arms its keep-alive timer only after a response, and neither of its HTTP parsers puts a
deadline on a request head; httptools does not bound the head's size either. A client that opens
connections and sends half a head holds them, and their file descriptors, forever.

:func:`guarded_protocol` subclasses uvicorn's protocol class (httptools or h11) so that a connection
waiting for a request head (just opened, or idle after a response) is:

1. closed when the head is not complete within ``timeout`` seconds (408 first if any of it arrived);
2. answered 431 and closed when the head grows past ``max_bytes``.

A connection whose request is being handled is not touched: the body has its own deadline in the app.
"""

from __future__ import annotations

import asyncio
from typing import Any

_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large"}


def guarded_protocol(base: type[Any], timeout: float, max_bytes: int) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol ``base`` with a deadline and a size bound on request heads.

    Args:
        base: uvicorn's protocol class (``HttpToolsProtocol`` or ``H11Protocol``); it must keep the
            request in flight in ``cycle`` and call ``on_response_complete`` after each response.
        timeout: seconds a connection may take to deliver a complete request head.
        max_bytes: most bytes a request head may take.
    """

    class HeadGuardedProtocol(base):  # type: ignore[misc, valid-type]
        _head_timer: asyncio.TimerHandle | None = None
        _head_bytes = 0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._waiting_for_head():
                super().data_received(data)
                return
            room = max_bytes - self._head_bytes  # the parser sees at most max_bytes of a head
            super().data_received(data[:room])
            if self._waiting_for_head():
                self._head_bytes += min(len(data), room)
                if len(data) > room:
                    self._refuse(431, f"request head over {max_bytes} bytes")
                return
            self._stop_head_timer()
            if len(data) > room:
                super().data_received(data[room:])

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_head()

        def _waiting_for_head(self) -> bool:
            return self.cycle is None or bool(self.cycle.response_complete)

        def _await_head(self) -> None:
            self._stop_head_timer()
            self._head_bytes = 0
            self._head_timer = asyncio.get_running_loop().call_later(timeout, self._head_expired)

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_expired(self) -> None:
            self._head_timer = None
            if not self._waiting_for_head() or self.transport.is_closing():
                return
            if self._head_bytes:
                self._refuse(408, f"request head not complete within {timeout:g} s")
            else:
                self.transport.close()

        def _refuse(self, status: int, message: str) -> None:
            self._stop_head_timer()
            if self.transport.is_closing():
                return
            body = message.encode()
            head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
            self.transport.write(head.encode() + body)
            self.transport.close()

    HeadGuardedProtocol.__name__ = HeadGuardedProtocol.__qualname__ = f"HeadGuarded{base.__name__}"
    return HeadGuardedProtocol
