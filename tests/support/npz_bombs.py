"""Hostile ``.npz`` files written by hand: zip bombs and ``.npy`` headers that lie, built in milliseconds.

A bomb is one deflated 1 MiB block of zeros repeated (each block ends with a full flush, so its bytes do
not depend on what came before): about 1 KiB of file per MiB inflated. The zip is written by hand so that
the sizes it declares can be anything.
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import cache
from pathlib import Path

import numpy as np

MIB = 1 << 20
Member = tuple[str, bytes, int, int]
"""A zip member: name, deflated bytes, declared (inflated) size, crc32."""


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """The ``.npy`` magic and header numpy writes for an array of ``shape`` and ``descr``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


@cache
def _zero_block() -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    comp.compress(b"")
    return comp.compress(bytes(MIB)) + comp.flush(zlib.Z_FULL_FLUSH)


def deflated(head: bytes, zeros: int, check: str = "crc32") -> tuple[bytes, int]:
    """Raw deflate of ``head`` + ``zeros`` zero bytes (a whole number of MiB), and its crc32 or adler32."""
    assert zeros % MIB == 0
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(head) + comp.flush(zlib.Z_FULL_FLUSH)
    update = zlib.crc32 if check == "crc32" else zlib.adler32
    value, block = update(head), bytes(MIB)
    for _ in range(zeros // MIB):
        value = update(block, value)
    last = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)  # an empty final block
    return first + _zero_block() * (zeros // MIB) + last, value


def deflated_member(name: str, head: bytes, zeros: int) -> Member:
    """A member holding ``head`` then ``zeros`` zero bytes (a whole number of MiB), declaring its true size."""
    raw, crc = deflated(head, zeros)
    return name, raw, len(head) + zeros, crc


def array_member(name: str, array: np.ndarray) -> Member:
    """A genuine member: ``array`` as ``np.save`` writes it, deflated."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    data = buf.getvalue()
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    return name, comp.compress(data) + comp.flush(), len(data), zlib.crc32(data)


def write_zip(path: Path, members: list[Member]) -> Path:
    """A zip of deflated ``members``, their sizes as declared."""
    body, central = b"", b""
    for name, raw, size, crc in members:
        fname = name.encode()
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(raw), size,
                               len(fname), 0, 0, 0, 0, 0, len(body)) + fname
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(raw), size, len(fname), 0) + fname + raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(body), 0)
    path.write_bytes(body + central + end)
    return path
