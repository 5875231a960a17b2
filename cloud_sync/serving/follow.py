"""Following releases: the server runs the device agent's update cycle (the same code, not a copy) in
its own device directory, and swaps to the agent's active slot when it changes.

The agent downloads, verifies against the signed TUF metadata, unpacks into the inactive slot,
switches and health-checks; the server then loads the new slot through :meth:`ModelHost.swap`, which
verifies it again and only then replaces the served bundle. In-flight batches finish on the old one.
The served bundle is named after the release the agent committed (:func:`current_release`), not the
slot it was unpacked into.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from edgec.cloud_sync.serving.host import Release
from edgec.core.errors import ConfigError, EdgecError

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


def current_release(agent: Any) -> Release | None:
    """The release in the agent's active slot: the committed record (bundle name, sha256, number in the
    channel), else the name the slot's manifest gives (``NAME-TARGET-PRECISION``); None without one."""
    device, channel = agent.device, agent.config.channel
    slot = device.active_slot()
    if slot is None:
        return None
    committed = device.state.get("committed") or {}
    if committed.get("slot") == slot:
        number = committed.get("number")
        return Release(str(committed["bundle"]), committed.get("sha256"),
                       number if isinstance(number, int) and not isinstance(number, bool) else None, channel)
    try:
        manifest = json.loads((device.current / "manifest.json").read_text())
        name = "-".join(str(manifest[k]) for k in ("name", "target", "precision"))
    except (OSError, ValueError, KeyError, TypeError):
        name = f"slot {slot}"
    return Release(name, None, None, channel)


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
            release = current_release(agent)
            try:
                await asyncio.to_thread(state.host.swap, current.resolve(), None, release)
            except EdgecError as exc:
                state.metrics.swaps.labels(result="refused").inc()
                log.warning("%s not swapped in: %s", release.describe() if release else outcome.bundle, exc.message)
                continue
            state.swapped()
            state.metrics.swaps.labels(result="swapped").inc()
            log.warning("now serving %s", state.host.current.describe())

    return follow
