"""The edgec folders import each other one way: a lower room never imports a higher one.

Every ``import`` / ``from ... import`` of ``edgec.*`` in every source file is an edge, wherever it
stands (module level, inside a function, under ``TYPE_CHECKING``, relative or absolute). A folder may
import its own rank or lower; ``benchmarks`` and ``cloud_sync`` share the top rank and must not import
each other. Loading plugins by module-name strings (the CLI's ``PLUGIN_MODULES``, the registry's folder
scan) is not an import and is not an edge.

The runtime shims rank lowest because they ship alone inside bundles (``edgec_shim/``): they import
nothing from edgec (relative imports only), and only the stdlib and numpy at module level; the runtime
a runner wraps is imported inside its functions.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.conftest import REPO

RANKS = {
    "runtime_shims": 0,
    "core": 1,
    "calibration": 2,
    "frameworks": 3,
    "targets": 4,
    "compiler": 5,
    "benchmarks": 6,
    "cloud_sync": 6,
}
"""Lowest first: a folder imports its own rank or lower (and never another folder of its own rank)."""

ALLOWED: set[tuple[str, str]] = set()
"""Known edges that break the ranks, as (file, imported module): each must still exist, see below. Empty:
keep it so (the last one, compiler/cli.py importing benchmarks' speedup gate, went when the CLI started
passing the gate into the build)."""


@dataclass(frozen=True)
class Edge:
    """One import statement of an absolute module name, where it stands."""

    file: str
    line: int
    module: str
    in_function: bool
    relative: bool

    @property
    def folder(self) -> str | None:
        """The edgec folder imported (``compiler`` for ``edgec.compiler.cli``), or None outside edgec."""
        parts = self.module.split(".")
        return parts[1] if parts[0] == "edgec" and len(parts) > 1 else None

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.module}"


def _package(path: Path, root: Path) -> list[str]:
    """``['edgec', 'compiler', 'passes']`` for ``<root>/compiler/passes/simplify.py``."""
    parts = ["edgec", *path.relative_to(root).parent.parts]
    return parts


def _targets(node: ast.Import | ast.ImportFrom, package: list[str]) -> list[str]:
    """The absolute module names one import statement loads (``from edgec import x`` loads ``edgec.x``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = package[: len(package) - node.level + 1]
        module = ".".join([*base, node.module] if node.module else base)
    else:
        module = node.module or ""
    if node.module is None or module in ("edgec", *(f"edgec.{f}" for f in RANKS)):
        return [f"{module}.{alias.name}" for alias in node.names]  # from edgec.compiler import fidelity
    return [module]


def scan(path: Path, root: Path) -> list[Edge]:
    """Every import in ``path`` as an :class:`Edge`, module level and function level alike."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package, name = _package(path, root), path.relative_to(root).as_posix()
    edges: list[Edge] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            relative = isinstance(node, ast.ImportFrom) and node.level > 0
            edges.extend(Edge(name, node.lineno, m, in_function, relative) for m in _targets(node, package))
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return edges


def _sources(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def _all_edges() -> list[Edge]:
    return [edge for folder in RANKS for path in _sources(folder) for edge in scan(path, REPO)]


def _breaks_rank(edge: Edge) -> bool:
    source, target = edge.file.split("/")[0], edge.folder
    if target is None or target == source:
        return False
    return target not in RANKS or RANKS[target] >= RANKS[source]


def test_every_installed_folder_has_a_rank() -> None:
    text = (REPO / "pyproject.toml").read_text()
    installed = set(re.findall(r'"edgec\.(\w+)"\s*=\s*"(\w+)"', text))
    assert installed == {(folder, folder) for folder in RANKS}, "pyproject's package-dir and RANKS differ"
    for folder in RANKS:
        assert _sources(folder), f"{folder}/ holds no Python files"


def test_scan_sees_function_level_relative_and_type_checking_imports(tmp_path: Path) -> None:
    """The graph test is only as good as its scanner: every way of importing is an edge."""
    path = tmp_path / "targets" / "sub" / "mod.py"
    path.parent.mkdir(parents=True)
    path.write_text(textwrap.dedent("""
        from typing import TYPE_CHECKING
        import edgec.core.errors
        from edgec import compiler
        from edgec.frameworks import fidelity, onnx_utils
        from .. import base
        from ...cloud_sync.store import Store
        if TYPE_CHECKING:
            from edgec.benchmarks.bench import speedup_gate

        def later():
            from edgec.compiler.pipeline import build
            return lambda: __import__("edgec.benchmarks")  # a string, not an import
    """))
    found = {(e.line, e.module, e.in_function) for e in scan(path, tmp_path) if e.folder}
    assert found == {
        (3, "edgec.core.errors", False), (4, "edgec.compiler", False),
        (5, "edgec.frameworks.fidelity", False), (5, "edgec.frameworks.onnx_utils", False),
        (6, "edgec.targets.base", False), (7, "edgec.cloud_sync.store", False),
        (9, "edgec.benchmarks.bench", False), (12, "edgec.compiler.pipeline", True),
    }
    broken = sorted(str(e) for e in scan(path, tmp_path) if e.folder and _breaks_rank(e))
    assert broken == ["targets/sub/mod.py:12 imports edgec.compiler.pipeline",
                      "targets/sub/mod.py:4 imports edgec.compiler",
                      "targets/sub/mod.py:7 imports edgec.cloud_sync.store",
                      "targets/sub/mod.py:9 imports edgec.benchmarks.bench"]


def test_folders_import_one_way() -> None:
    broken = [e for e in _all_edges() if _breaks_rank(e) and (e.file, e.module) not in ALLOWED]
    ranks = ", ".join(f"{folder} {rank}" for folder, rank in RANKS.items())
    assert not broken, f"imports against the folder ranks ({ranks}):\n" + "\n".join(map(str, broken))


def test_every_allowed_exception_is_still_needed() -> None:
    """An allow-list entry goes once its import is gone, so that the list only shrinks."""
    edges = {(e.file, e.module) for e in _all_edges() if _breaks_rank(e)}
    assert not ALLOWED - edges, f"no longer imported, remove from ALLOWED: {sorted(ALLOWED - edges)}"


def _stdlib_or_numpy(module: str) -> bool:
    top = module.split(".")[0]
    return top in sys.stdlib_module_names or top == "numpy"


def test_runtime_shims_import_only_stdlib_and_numpy_at_module_level() -> None:
    """A runner's runtime is imported inside its functions, so every shim imports where only it is missing."""
    edges = [e for path in _sources("runtime_shims") for e in scan(path, REPO)]
    wrong = [f"{e} (edgec_shim ships alone: import its own modules relatively)" for e in edges
             if e.folder and e.folder != "runtime_shims"]
    wrong += [f"{e} (at module level)" for e in edges
              if not e.folder and not e.in_function and not _stdlib_or_numpy(e.module)]
    absolute = [str(e) for e in edges if e.folder == "runtime_shims" and not e.relative]
    assert not wrong, "runtime shims import beyond the stdlib and numpy:\n" + "\n".join(wrong)
    assert not absolute, "runtime shims must import each other relatively (they run as edgec_shim):\n" + "\n".join(absolute)


def test_shims_copied_alone_import_with_only_the_stdlib_and_numpy(tmp_path: Path) -> None:
    """As on a device: the folder copied as ``edgec_shim``, no site-packages but numpy's, every other package hidden."""
    shim = tmp_path / "edgec_shim"
    shim.mkdir()
    names = []
    for path in _sources("runtime_shims"):
        (shim / path.name).write_bytes(path.read_bytes())
        names.append(path.stem)
    code = textwrap.dedent(f"""
        import importlib, importlib.abc, json, sys
        sys.path[:0] = [{str(tmp_path)!r}, {str(Path(np.__file__).parents[1])!r}]
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("numpy", "edgec_shim"):
                    raise ModuleNotFoundError(f"hidden on the device: {{name}}", name=name)
        sys.meta_path.insert(0, Block())
        for name in {sorted(set(names) - {"__init__"})!r}:
            importlib.import_module("edgec_shim." + name)
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] not in sys.stdlib_module_names
                                and m.split(".")[0] not in ("numpy", "__main__"))))
    """)
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = set(json.loads(proc.stdout)) - {"edgec_shim"}
    assert loaded == {f"edgec_shim.{n}" for n in names if n != "__init__"}
