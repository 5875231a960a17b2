"""What a target needs is looked up without importing it: `edgec targets` answers fast, says "ready" only when
every route's modules are there, and names the exact command for what is missing (tf-keras: --no-deps).

The checks that build nothing; the builds are in tests/integration/targets/test_installed.py."""

from __future__ import annotations

import re

from tests.conftest import REPO


def test_tf_keras_pin_follows_the_tflite_extra_and_the_makefile() -> None:
    from edgec.core.installed import TF_KERAS

    pyproject = (REPO / "pyproject.toml").read_text()
    tf_pin = re.search(r'"tensorflow-cpu==([\d.]+)"', pyproject)
    assert tf_pin and TF_KERAS == f"tf-keras=={tf_pin.group(1)}"
    assert f"--no-deps '{TF_KERAS}'" in (REPO / "Makefile").read_text()
