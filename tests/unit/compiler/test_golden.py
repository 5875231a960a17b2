"""Golden inputs that make the parity check mean something: spread over the calibration set, and said
to be synthetic when they are.

The checks that build nothing; the builds are in tests/integration/compiler/test_golden.py."""

from __future__ import annotations

from edgec.compiler.golden import spread


def test_spread_starts_at_zero_and_takes_everything_from_a_small_set() -> None:
    assert spread(32, 4) == [0, 8, 16, 24]
    assert spread(10, 4) == [0, 2, 5, 7]
    assert spread(3, 8) == [0, 1, 2]
