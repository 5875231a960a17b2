"""The importer contract: claim a source string, load it into a cached artifact, run the FP32 reference.

An importer normalises a user's source (an ONNX file, a torch ``module:factory``, a ``.pt2``, later a
TensorFlow SavedModel) into a :class:`ModelArtifact` in a format that passes and targets understand,
and can compute reference outputs with the source framework itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from edgec.compiler.cache import StageCache
from edgec.core.errors import ConfigError
from edgec.core.registry import Registry
from edgec.core.types import Feed, ModelArtifact

IMPORTERS: Registry[Importer] = Registry("importer", "edgec.compiler.importers")



@dataclass(frozen=True)
class ImportResult:
    """An imported model and what the manifest records about its source."""

    artifact: ModelArtifact
    name: str
    source_format: str
    source_sha256: str


class Importer:
    """Base class; subclasses set ``name``/``extra`` and implement the three methods."""

    name: ClassVar[str]
    extra: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    """Artifact formats this importer produces and can run as a reference."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            IMPORTERS.add(cls.name, cls)

    @classmethod
    def claims(cls, source: str) -> bool:
        """Whether this importer handles the source string."""
        raise NotImplementedError

    @classmethod
    def source_name(cls, source: str) -> str:
        """The name of ``source`` that bundles get by default (:attr:`ImportResult.name`), from the source
        string alone: the build refuses an existing bundle before it imports anything."""
        raise NotImplementedError

    def load(self, source: str, cache: StageCache, log: Callable[[str], None]) -> ImportResult:
        """Load and normalise the source.

        Raises:
            ConfigError: the source does not exist.
            ExportError: the source is corrupt or cannot be exported.
        """
        raise NotImplementedError

    def reference(self, artifact: ModelArtifact, feeds: list[Feed]) -> list[Feed]:
        """FP32 outputs of ``artifact`` for each feed, computed by the source framework."""
        raise NotImplementedError


def find_importer(source: str) -> Importer:
    """The importer that claims ``source``.

    Raises:
        ConfigError: no importer recognises it.
    """
    for cls in IMPORTERS.all():
        if cls.claims(source):
            return cls()
    raise ConfigError(
        f"do not know how to import {source!r}; expected an .onnx file, a torch .pt2 file, a TensorFlow SavedModel "
        "directory, a Keras .keras or .h5 file, or a PyTorch factory as path/to/file.py:function or package.module:function"
    )


def importer_for_format(fmt: str) -> Importer:
    """The importer that can run artifacts of format ``fmt`` as a reference."""
    for cls in IMPORTERS.all():
        if fmt in cls.formats:
            return cls()
    raise ConfigError(f"no importer handles the {fmt} format")
