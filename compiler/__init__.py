"""edgec core: artifact types, errors, registry, cache, config, planner, pipeline and the CLI."""

from __future__ import annotations

__version__ = "0.1.0"
