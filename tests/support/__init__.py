"""Helpers shared by tests; test modules import from here, never from each other."""
