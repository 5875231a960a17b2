"""Calibration data: readers (npz, folders of npy/npz, image folders) and the :class:`CalibrationSet`."""

from __future__ import annotations

from .dataset import METHODS, CalibrationSet, load_calibration

__all__ = ["METHODS", "CalibrationSet", "load_calibration"]
