"""Running edgec as a user does (a subprocess, or in-process for the sync commands) and checking one-line errors."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m edgec.compiler`` as a user would run ``edgec``."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgec.compiler", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=600)


def assert_one_line_error(proc, code: int, *fragments: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def cli(*args: str) -> tuple[int, str, str]:
    """Run ``edgec ARGS`` in-process; returns (exit code, stdout, stderr), as the console script would exit."""
    import edgec.compiler.cli as edgec_cli

    if "edgec.cloud_sync.cli" not in edgec_cli.PLUGIN_MODULES:
        edgec_cli.PLUGIN_MODULES.append("edgec.cloud_sync.cli")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = edgec_cli.main(list(args))
        except SystemExit as exc:  # argparse's usage errors exit from inside the parser
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()
