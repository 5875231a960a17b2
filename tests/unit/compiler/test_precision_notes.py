"""What a precision buys on each target is said where the user decides: ``edgec targets`` lists each
target's measured notes, and a build of that precision repeats its note in the summary.

The checks that build nothing; the builds are in tests/integration/compiler/test_precision_notes.py."""

from __future__ import annotations

from edgec.targets.base import TARGETS


def test_cpu_targets_say_fp16_halves_storage_and_how_fast_it_ran() -> None:
    for name in ("onnx", "openvino", "tflite"):
        note = TARGETS.get(name).precision_notes["fp16"]
        assert "halves" in note and "x fp32 latency" in note and "\n" not in note, (name, note)
