"""Importers, one per source format family; each registers itself by its ``name`` when defined."""
