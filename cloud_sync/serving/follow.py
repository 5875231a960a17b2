"""Following releases: the server runs the device agent's update cycle (the same code, not a copy) in
its own device directory, and swaps to the agent's active slot when it changes.

The agent downloads, verifies against the signed TUF metadata, unpacks into the inactive slot,
switches and health-checks; the server then loads the new slot through :meth:`ModelHost.swap`, which
verifies it again and only then replaces the served bundle. In-flight batches finish on the old one.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from edgec.compiler.errors import ConfigError, EdgecError

log = logging.getLogger("edgec.serve")


def make_agent(store_url: str, device_id: str, root: Path, channel: str, trusted_root: Path | None) -> Any:
    """A device agent for the server's own device directory."""
    from edgec.cloud_sync.agent import Agent, AgentConfig
    from edgec.cloud_sync.store import open_store

    config = AgentConfig(store_url=store_url, device_id=device_id, root=root, channel=channel, trusted_root=trusted_root)
    return Agent(config, open_store(store_url))


def first_bundle(agent: Any) -> Path:
    """Run one cycle and return the active slot.

    Raises:
        ConfigError: the channel has no working release yet.
    """
    outcome = agent.cycle()
    current = agent.device.current
    if not current.exists():
        raise ConfigError(f"no release to serve from {agent.config.store_url} channel {agent.config.channel!r}: "
                          f"{outcome.state}{': ' + outcome.error if outcome.error else ''}")
    return current.resolve()


def follower(agent: Any, interval: float) -> Any:
    """A coroutine function for :attr:`ServerState.follow`."""

    async def follow(state: Any) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                outcome = await asyncio.to_thread(agent.cycle)
            except Exception:  # a bug in one cycle must not stop serving
                log.exception("release check failed")
                continue
            current = agent.device.current
            if not current.exists() or current.resolve() == state.host.current.path.resolve():
                continue
            try:
                await asyncio.to_thread(state.host.swap, current.resolve())
            except EdgecError as exc:
                state.metrics.swaps.labels(result="refused").inc()
                log.warning("release %s not swapped in: %s", outcome.bundle, exc.message)
                continue
            state.swapped()
            state.metrics.swaps.labels(result="swapped").inc()
            log.warning("now serving %s", state.host.current.bundle_id)

    return follow
