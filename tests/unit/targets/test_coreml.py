"""The coreml target on a tiny torch CNN built inline: package files, interface and weight checks, errors.

Core ML models only execute on macOS; on other hosts these tests check what a Linux build promises
(the package loads, matches the source, stores the weights as asked, is listed and hashed in the
manifest, is byte-reproducible) and that parity is recorded as not measured rather than invented.

The checks that build nothing; the builds are in tests/integration/targets/test_coreml.py."""

from __future__ import annotations

import pytest

from edgec.core import errors
from edgec.targets.base import PrecisionRequest
from edgec.targets.coreml import make_plan

pytest.importorskip("coremltools", reason="the coreml target: pip install 'edgec[coreml]'")


def test_plan_resolves_precision_and_compression() -> None:
    fp16 = make_plan(PrecisionRequest("fp16"), None, "iOS16")
    assert (fp16.compute, fp16.weights, fp16.activations) == ("fp16", "float", "float")
    int8 = make_plan(PrecisionRequest("int8", "auto"), None, "iOS16")
    assert (int8.compute, int8.weights, int8.activations, int8.weight_threshold) == ("fp16", "int8", "float", 128)
    pal8 = make_plan(PrecisionRequest("fp16"), 8, "iOS16")
    assert (pal8.weights, pal8.nbits, pal8.expected_storage()) == ("palettize", 8, "palette8")
    assert pal8.weight_threshold == 1024  # a 256-entry table must pay for itself


@pytest.mark.parametrize(("request_", "bits", "error", "text"), [
    (PrecisionRequest("fp16"), 5, errors.ConfigError, "4, 6, 8"),
    (PrecisionRequest("int8"), 4, errors.UnsupportedError, "--palettize replaces int8"),
])
def test_plan_rejects_bad_combinations(request_: PrecisionRequest, bits: int, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        make_plan(request_, bits, "iOS16")
