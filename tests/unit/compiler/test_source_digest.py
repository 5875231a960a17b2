"""Stage cache keys change when edgec's own code changes (through the build's toolchain), not only its version."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgec.compiler import source_digest as sd
from edgec.compiler.cache import StageCache
from edgec.compiler.config import BuildConfig
from edgec.compiler.importers.base import find_importer
from edgec.compiler.pipeline import Build, get_target


def _tree(root: Path) -> Path:
    (root / "passes").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "passes" / "fold.py").write_text("def fold(x):\n    return x\n")
    (root / "notes.txt").write_text("not code")
    return root


def test_digest_changes_with_one_byte_of_code_and_only_with_code(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert sd.digest_of([("compiler", a)]) == sd.digest_of([("compiler", b)])
    (b / "notes.txt").write_text("edited, but not code")
    assert sd.digest_of([("compiler", a)]) == sd.digest_of([("compiler", b)])
    (b / "passes" / "fold.py").write_text("def fold(x):\n    return x + 0\n")
    assert sd.digest_of([("compiler", a)]) != sd.digest_of([("compiler", b)])


def test_digest_covers_file_names_and_package_labels(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a")
    before = sd.digest_of([("compiler", a)])
    assert sd.digest_of([("targets", a)]) != before
    (a / "passes" / "fold.py").rename(a / "passes" / "unfold.py")
    assert sd.digest_of([("compiler", a)]) != before


def test_the_running_code_is_digested_from_every_build_package() -> None:
    labels = {label for label, _ in sd.package_roots()}
    assert labels == set(sd.BUILD_PACKAGES)
    assert len(sd.source_digest()) == 16 and sd.source_digest() == sd.digest_of(sd.package_roots())


def test_the_build_toolchain_and_so_every_cache_key_carries_the_code_digest(tmp_path: Path) -> None:
    config = BuildConfig(source="model.onnx", target="onnx", precision="fp32")
    build = Build(config, get_target("onnx"), find_importer("model.onnx"), StageCache(tmp_path, enabled=False))
    assert build.toolchain["edgec_code"] == sd.source_digest()
