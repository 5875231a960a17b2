"""ExecuTorch's thread pool is process-wide and XNNPACK delegates keep the pool their method loaded with:
resizing it under a loaded program made that program's next calls run on freed memory (the segfault of
``make demo``'s latency loop). The runner sizes the pool before loading, and refuses to resize it under
another loaded program."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgec.runtime_shims.base import RunnerError
from edgec.runtime_shims.executorch import ExecuTorchRunner

torch = pytest.importorskip("torch", reason="pip install 'edgec[executorch]'")
pytest.importorskip("executorch", reason="pip install 'edgec[executorch]'")

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def pte(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3)).eval()
    program = torch.export.export(model, (torch.randn(1, 1, 32, 32),))
    path = tmp_path_factory.mktemp("threads") / "model.pte"
    path.write_bytes(to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
    return path


FEED = {"input_0": np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype(np.float32)}


def test_resizing_the_pool_under_a_loaded_program_is_refused_and_that_program_keeps_running(pte: Path) -> None:
    with ExecuTorchRunner(str(pte), threads=1) as first:
        expected = first.infer(FEED)["output_0"]
        with pytest.raises(RunnerError, match="thread pool is process-wide"):
            ExecuTorchRunner(str(pte), threads=2).activate()
        with ExecuTorchRunner(str(pte), threads=1) as same:  # the same size needs no resize
            np.testing.assert_array_equal(same.infer(FEED)["output_0"], expected)
        for _ in range(50):
            np.testing.assert_array_equal(first.infer(FEED)["output_0"], expected)
    with ExecuTorchRunner(str(pte), threads=2) as resized:  # nothing loaded any more: resized, then loaded
        np.testing.assert_allclose(resized.infer(FEED)["output_0"], expected, rtol=1e-5, atol=1e-5)


RESIZES = """
import sys
import numpy as np
from edgec.runtime_shims.executorch import ExecuTorchRunner
feed = {"input_0": np.ones((1, 1, 32, 32), np.float32)}
for threads in (1, 2, 1, 2, 1):  # what the demo did: one runner per bundle, each sizing the pool
    with ExecuTorchRunner(sys.argv[1], threads=threads) as runner:
        for _ in range(200):
            runner.infer(feed)
print("ok")
"""


def test_runners_sizing_the_pool_one_after_another_run_to_the_end(pte: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", RESIZES, str(pte)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
