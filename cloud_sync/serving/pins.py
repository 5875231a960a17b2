"""What ``edgec package`` installs in the image: the wheel of the edgec that built the bundle, and every
other package pinned to an exact version.

The wheel comes from ``--wheel`` or is built from the source tree of the running edgec (an editable or
local-directory install: the folder holding ``pyproject.toml`` beside the ``compiler`` package). The
source is copied to a temporary folder first, so the build neither writes into the checkout nor picks
up stale files from its ``build/`` folder. The requirements are the whole dependency closure of
``edgec[serve,<target extra>]``, as installed here, with the versions the bundle's manifest records in
``toolchain`` (the runtime that produced its golden parity, numpy) taking precedence; the image installs
them with ``--no-deps``, so nothing unpinned can come in, and runs ``pip check``.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from edgec.core.errors import ConfigError, require

SOURCE_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in", "README.md", "README.rst")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".*")
PYTHON_VERSION = re.compile(r"\d+\.\d+(\.\d+)?")
BUILD_TIMEOUT_S = 300
WHEEL_HINT = "pass --wheel PATH: the wheel of the edgec that built the bundle (from a clone: pip wheel --no-deps CLONE)"


def _declares_edgec(root: Path) -> bool:
    try:
        text = (root / "pyproject.toml").read_text()
    except OSError:
        return False
    return re.search(r'(?m)^name\s*=\s*"edgec"\s*$', text) is not None


def _direct_url_dirs() -> list[Path]:
    """Folders that editable installs of edgec run from (PEP 610 ``direct_url.json``). A non-editable
    install from a folder is left out: that folder may have changed since, so it is not what runs."""
    folders = []
    for dist in md.distributions(name="edgec"):
        try:
            info = json.loads(dist.read_text("direct_url.json") or "{}")
        except ValueError:
            continue
        url = info.get("url", "") if isinstance(info, dict) else ""
        if url.startswith("file://") and isinstance(info.get("dir_info"), dict) and info["dir_info"].get("editable"):
            folders.append(Path(url.removeprefix("file://")))
    return folders


def find_source() -> Path | None:
    """The source tree of the running edgec, or None when it was installed from a wheel."""
    import edgec.compiler

    here = Path(edgec.compiler.__file__).resolve().parent.parent
    return next((root for root in [here, *_direct_url_dirs()] if _declares_edgec(root)), None)


def _copy_source(root: Path, dest: Path) -> None:
    """The files a build needs: the top-level project files and the package folders (not tests)."""
    dest.mkdir()
    for item in sorted(root.iterdir()):
        if item.is_file() and (item.name in SOURCE_FILES or item.name.startswith("LICENSE")):
            shutil.copy2(item, dest / item.name)
        elif item.is_dir() and item.name != "tests" and (item / "__init__.py").is_file():
            shutil.copytree(item, dest / item.name, ignore=SKIP)


def build_wheel(root: Path, dest: Path) -> Path:
    """Build edgec's wheel from the source tree ``root`` into ``dest`` (offline, no build isolation).

    Raises:
        ConfigError: the build failed (no pip or setuptools here, or a broken tree).
    """
    with tempfile.TemporaryDirectory(prefix="edgec-wheel-") as tmp:
        source = Path(tmp) / "src"
        _copy_source(root, source)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
               "--quiet", "--wheel-dir", str(dest), str(source)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ConfigError(f"building edgec's wheel from {root} took over {BUILD_TIMEOUT_S} s", hint=WHEEL_HINT) from None
    wheels = sorted(dest.glob("edgec-*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        lines = [line for line in proc.stderr.splitlines() if line.strip()] or ["no wheel written"]
        raise ConfigError(f"could not build edgec's wheel from {root}: {lines[-1].strip()[:200]}", hint=WHEEL_HINT)
    return wheels[0]


def wheel_version(path: Path) -> str:
    """The edgec version in a wheel's file name.

    Raises:
        ConfigError: not a file, or not an edgec wheel.
    """
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    if not path.is_file():
        raise ConfigError(f"--wheel {path} not found", hint=WHEEL_HINT)
    try:
        name, version, _, _ = parse_wheel_filename(path.name)
    except InvalidWheelFilename:
        raise ConfigError(f"--wheel {path} is not a wheel file name (NAME-VERSION-TAGS.whl)", hint=WHEEL_HINT) from None
    if name != "edgec":
        raise ConfigError(f"--wheel {path} is a wheel of {name}, not edgec", hint=WHEEL_HINT)
    return str(version)


def edgec_wheel(wheel: Path | None, dest: Path, built_by: str | None) -> Path:
    """The wheel to install, in ``dest``: ``wheel`` copied, or built from the running edgec's source.

    Raises:
        ConfigError: no source to build from and no ``wheel``, a failed build, or a wheel of another
            edgec version than ``built_by`` (the manifest's).
    """
    if wheel is None:
        root = find_source()
        if root is None:
            raise ConfigError("this edgec was installed from a wheel, so there is no source to build the image's wheel from",
                              hint=WHEEL_HINT)
        path = build_wheel(root, dest)
    else:
        wheel_version(wheel)
        path = Path(shutil.copy2(wheel, dest / wheel.name))
    version = wheel_version(path)
    if built_by is not None and version != built_by:
        path.unlink()
        raise ConfigError(f"the bundle was built by edgec {built_by}, but the wheel is edgec {version}", hint=WHEEL_HINT)
    return path


# -- the pinned closure ------------------------------------------------------------------------------

def image_python(toolchain: dict[str, str]) -> str:
    """The bundle's Python version (``toolchain["python"]``; this one when absent).

    Raises:
        ConfigError: the manifest's value is not a version number.
    """
    version = toolchain.get("python") or platform.python_version()
    if not PYTHON_VERSION.fullmatch(version):
        raise ConfigError(f"the manifest's toolchain python {version!r} is not a version like 3.11.7")
    return version


def marker_environment(python: str) -> dict[str, str]:
    """PEP 508 marker values of the image: Linux, CPython ``python``, this machine's architecture."""
    return {"python_version": ".".join(python.split(".")[:2]), "python_full_version": python, "sys_platform": "linux",
            "platform_system": "Linux", "os_name": "posix", "platform_python_implementation": "CPython",
            "implementation_name": "cpython", "platform_machine": platform.machine()}


def _applies(requirement: Any, extras: frozenset[str], env: dict[str, str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**env, "extra": extra}) for extra in ("", *extras))


def wheel_requires(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel's metadata.

    Raises:
        ConfigError: the file is not a readable wheel.
    """
    import email.parser
    import zipfile

    try:
        with zipfile.ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
            if archive.getinfo(name).file_size > 1 << 20:
                raise ConfigError(f"{wheel.name}: METADATA is over 1 MiB")
            text = archive.read(name).decode("utf-8", "replace")
    except (OSError, zipfile.BadZipFile, StopIteration):
        raise ConfigError(f"{wheel} is not a readable wheel (no .dist-info/METADATA)", hint=WHEEL_HINT) from None
    return list(email.parser.Parser().parsestr(text).get_all("Requires-Dist") or [])


def closure(edgec_requires: list[str], extras: frozenset[str], env: dict[str, str]) -> dict[str, md.Distribution]:
    """The installed distributions that edgec (with ``edgec_requires``, its wheel's) and ``extras`` needs,
    transitively, by normalized name.

    Raises:
        ConfigError: a needed distribution is not installed here, so its version is unknown.
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, md.Distribution] = {}
    todo, seen = [("edgec", extras)], set()
    while todo:
        name, wanted = todo.pop()
        key = canonicalize_name(name)
        if (key, wanted) in seen:
            continue
        seen.add((key, wanted))
        if key == "edgec":
            requires = edgec_requires
        else:
            found[key] = _installed(name)
            requires = found[key].requires or []
        for text in requires:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                raise ConfigError(f"{name} declares a requirement that cannot be parsed: {text!r}") from None
            if _applies(requirement, wanted, env):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return found


def _installed(name: str) -> md.Distribution:
    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        raise ConfigError(f"the image needs {name}, which is not installed here, so its version cannot be pinned",
                          hint=f"pip install {name} (the version to ship), then run edgec package again") from None


def pinned_requirements(wheel: Path, extras: frozenset[str], toolchain: dict[str, str], python: str) -> list[str]:
    """``name==version`` lines for everything the image installs besides edgec's wheel, sorted; the
    manifest's toolchain versions win over the installed ones.

    Raises:
        ConfigError: a needed distribution is missing here, or the manifest's version of one is not a
            PEP 440 version.
    """
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    recorded: dict[str, str] = {canonicalize_name(k): v for k, v in toolchain.items() if k not in ("python", "edgec")}
    lines = []
    for key, dist in sorted(closure(wheel_requires(wheel), extras, marker_environment(python)).items()):
        try:
            version = str(Version(recorded.get(key, dist.version)))
        except InvalidVersion:
            raise ConfigError(f"the manifest's toolchain names {key} {recorded.get(key)!r}, which is not a version") from None
        note = f"  # the bundle's toolchain (installed here: {dist.version})" if version != dist.version else ""
        lines.append(f"{key}=={version}{note}")
    return lines


def requirements_text(wheel: Path, extras: frozenset[str], toolchain: dict[str, str], python: str) -> str:
    """The image's ``requirements.txt``.

    Raises:
        ConfigError: see :func:`pinned_requirements`.
    """
    require("packaging", "serve", "edgec package")
    head = (f"# edgec[{','.join(sorted(extras))}] dependencies for Python {python} on Linux, each pinned: the versions in the\n"
            "# bundle's manifest (toolchain), else those installed where 'edgec package' ran. Installed with --no-deps.\n")
    return head + "\n".join(pinned_requirements(wheel, extras, toolchain, python)) + "\n"
