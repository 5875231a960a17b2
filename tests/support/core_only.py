"""Running code with the heavy frameworks hidden, as with only edgec's core installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

HIDDEN = ["torch", "onnx", "onnxruntime", "onnxslim", "onnxscript", "tensorflow", "openvino", "nncf",
          "coremltools", "tensorrt", "onnx2tf", "ai_edge_litert", "PIL", "obstore", "tuf", "transformers", "sklearn"]


PRELUDE = textwrap.dedent(f"""
    import importlib.abc, sys
    HIDDEN = {HIDDEN!r}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None
    sys.meta_path.insert(0, Block())
""")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
