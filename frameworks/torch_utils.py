"""Loading ``torch.export`` ``.pt2`` programs without running code from the file.

``.pt2`` files are loaded only after every archive member passed an allow-list of what
``torch.export.save`` writes for a plain program (no AOTInductor shared objects, no pickles; see
``_pt2_archive``), and with ``torch.load`` forced to ``weights_only=True``: a model file must never run
code on load. Used by the torch importer, the passes that edit programs and the targets that convert
them (coreml, openvino). ``torch`` is imported inside functions only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgec.core.errors import ExportError, brief, raise_if_bug, require
from edgec.frameworks._pt2_archive import check_pt2_archive


def torch_module() -> Any:
    """``torch``, or :class:`MissingDependencyError` naming the ``torch`` extra.

    Raises:
        MissingDependencyError: torch is not installed.
    """
    return require("torch", "torch", "importing PyTorch models")



@contextlib.contextmanager
def _quiet_export_log() -> Iterator[None]:
    """torch.export logs a traceback before re-raising a load error; the one-line ExportError says it."""
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _no_pickle(torch: Any) -> Iterator[None]:
    import pickle

    real_load, real_loads, real_c = torch.load, pickle.loads, torch._C._pickle_load_obj

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ExportError("the .pt2 file holds pickled objects; edgec refuses to unpickle model files")

    def weights_only(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    torch.load, pickle.loads, torch._C._pickle_load_obj = weights_only, refuse, refuse
    try:
        yield
    finally:
        torch.load, pickle.loads, torch._C._pickle_load_obj = real_load, real_loads, real_c


def safe_load_pt2(path: Path) -> Any:
    """Load a ``.pt2`` exported program without unpickling anything.

    Every archive member is checked against an allow-list (:func:`check_pt2_archive`) before torch
    opens the file, so AOTInductor shared objects and pickles are refused before anything is loaded.

    Raises:
        ExportError: the file is not a valid archive, holds a member outside the allow-list, or holds
            pickled objects.
        MissingDependencyError: torch is not installed.
    """
    check_pt2_archive(path)
    torch = torch_module()
    try:
        with _no_pickle(torch), _quiet_export_log():
            return torch.export.load(str(path))
    except ExportError:
        raise
    except Exception as exc:  # torch's errors (any type) on this file; a bug in edgec's pickle guard is raised as one
        raise_if_bug(exc, f"loading {path.name} with edgec's pickle guard")
        raise ExportError(f"could not load {path} as a torch.export program: {brief(exc)}") from exc
