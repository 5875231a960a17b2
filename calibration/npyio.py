"""Bounded reading of calibration ``.npy`` files and ``.npz`` archives: sizes are checked before anything is allocated.

Calibration files are untrusted. ``np.load`` trusts them: an ``.npy`` header may claim 10^12 samples (numpy
tries to allocate them), and an ``.npz`` member of 1 MB may inflate to gigabytes. The reading is done by
:mod:`edgec.runtime_shims.bounded_npz` (shared with the bundle's golden file), in order:

1. an ``.npz`` must be a zip (an ``.npy`` named ``.npz`` is named as such), with at most
   :data:`MAX_MEMBERS` members, each a ``<name>.npy`` stored or deflated;
2. the sizes the zip declares for its members (or the file sizes of ``.npy`` files) are taken from a
   :class:`Budget` (the ``--calib-max-mb`` limit) before any member is inflated;
3. each array's header (shape, dtype) is read first; the array must fit in the bytes its member
   declares, hold no Python objects, and is then read into one buffer of exactly that size, so a zip
   that lies about a member's size can never make edgec inflate more than it declared.

Its errors become :class:`CalibrationError` (exit 6), with the same one-line message.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import numpy as np

from edgec.core.errors import CalibrationError
from edgec.runtime_shims import bounded_npz
from edgec.runtime_shims.bounded_npz import MAX_MEMBERS as MAX_MEMBERS
from edgec.runtime_shims.bounded_npz import MIB as MIB

DEFAULT_MAX_MB = 2048
HINT = "raise the limit with --calib-max-mb N if the data is genuine"


class Budget(bounded_npz.Budget):
    """How many bytes a calibration read may still decode; shared by all files of one read.

    Args:
        limit: the most bytes the read may decode in total.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(limit, HINT)

    def refuse(self, nbytes: int, what: str) -> NoReturn:
        """Raise the calibration error for ``nbytes`` that do not fit.

        Raises:
            CalibrationError: always, with the ``--calib-max-mb`` hint.
        """
        before = f" ({_mb(self.used + nbytes)} with the files read before it)" if self.used else ""
        raise CalibrationError(f"{what} would decode to {_mb(nbytes)}{before}, above the calibration limit "
                               f"of {_mb(self.limit)}", hint=HINT)

    def fits(self, nbytes: int, what: str) -> None:
        """Check that one item decoding to ``nbytes`` could fit at all (images, decoded one at a time).

        Raises:
            CalibrationError: when ``nbytes`` alone passes the limit.
        """
        if nbytes > self.limit:
            raise CalibrationError(f"{what} would decode to {_mb(nbytes)}, above the calibration limit of "
                                   f"{_mb(self.limit)}", hint=HINT)


def read_npz(path: Path, budget: Budget) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``, read within ``budget``.

    Raises:
        CalibrationError: when the file is not an ``.npz`` of plain arrays or passes the budget.
    """
    _refuse_plain_npy(path)
    try:
        return bounded_npz.read_npz(path, budget, f"calibration file {path}")
    except bounded_npz.ArrayReadError as exc:
        raise CalibrationError(str(exc)) from None


def read_npy(path: Path, budget: Budget) -> np.ndarray:
    """One ``.npy`` file, read within ``budget``.

    Raises:
        CalibrationError: when the file is not a plain ``.npy`` or passes the budget.
    """
    try:
        return bounded_npz.read_npy(path, budget, f"calibration file {path}")
    except bounded_npz.ArrayReadError as exc:
        raise CalibrationError(str(exc)) from None


def _refuse_plain_npy(path: Path) -> None:
    try:
        plain = bounded_npz.is_plain_npy(path)
    except OSError as exc:
        raise CalibrationError(f"could not read calibration file {path}: {exc}") from None
    if plain:
        raise CalibrationError(
            f"calibration file {path} is a .npy array, not a .npz archive; expected np.savez(path, <input>=array) "
            "or a folder of <input>.npy files")


def _mb(nbytes: int) -> str:
    return bounded_npz.mb(nbytes)
