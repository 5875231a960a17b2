"""Tiny runners shipped inside bundles: they need only numpy and the target runtime.

Nothing here imports from the compiler, so the folder can be copied to a device on its own.
"""
