"""Deployment targets, one per file; each registers itself by its ``name`` when its class is defined."""
