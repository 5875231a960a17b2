"""A ``.pt2`` must never run code: members outside torch.export.save's plain layout are refused before loading.

The attack: a genuine ``torch.export.save`` archive plus an ``aotinductor/`` shared object whose constructor
writes a marker file. ``torch.export.load`` extracts it to a temp folder and dlopens it, so the constructor
ran before edgec reported "could not load". Now the archive is refused by name, nothing is extracted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from edgec.compiler.importers.torch import TorchImporter
from edgec.core import errors
from edgec.frameworks.torch_utils import safe_load_pt2
from tests.support.cli import assert_one_line_error, run_cli

torch = pytest.importorskip("torch")

CONSTRUCTOR_C = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void edgec_marker(void) {
    FILE *f = fopen(getenv("EDGEC_TEST_MARKER"), "w");
    if (f) { fputs("constructor ran\n", f); fclose(f); }
}
"""
SO_MEMBER = "data/aotinductor/model/model.wrapper.so"


class Plain(torch.nn.Module):
    """Weights, a persistent and a non-persistent buffer and a tensor constant."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.register_buffer("scale", torch.full((3,), 2.0))
        self.register_buffer("shift", torch.ones(3), persistent=False)
        self.const = torch.tensor([0.5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale + self.shift * self.const


def _save_plain(path: Path, **kwargs: object) -> Path:
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(Plain().eval(), (torch.randn(2, 4),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, str(path), **kwargs)  # type: ignore[arg-type]
    return path


@pytest.fixture(scope="module")
def plain_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_plain(tmp_path_factory.mktemp("pt2") / "model.pt2")


@pytest.fixture(scope="module")
def shared_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler to build the malicious shared object")
    folder = tmp_path_factory.mktemp("so")
    (folder / "marker.c").write_text(CONSTRUCTOR_C)
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(folder / "evil.so"), str(folder / "marker.c")], check=True)
    return folder / "evil.so"


def _root(archive: Path) -> str:
    with zipfile.ZipFile(archive) as zf:
        return zf.namelist()[0].split("/", 1)[0]


def _with_members(src: Path, dst: Path, members: dict[str, bytes], compress_type: int = zipfile.ZIP_STORED) -> Path:
    """Copy ``src`` and append ``members``; ``{root}`` in a name is the archive's top folder."""
    shutil.copy(src, dst)
    root = _root(src)
    with zipfile.ZipFile(dst, "a") as zf:
        for name, data in members.items():
            zi = zipfile.ZipInfo(name.format(root=root))
            zi.compress_type = compress_type
            zf.writestr(zi, data)
    return dst


@pytest.fixture
def aoti_pt2(plain_pt2: Path, shared_object: Path, tmp_path: Path) -> Path:
    metadata = json.dumps({"AOTI_DEVICE_KEY": "cpu"}).encode()
    return _with_members(plain_pt2, tmp_path / "evil.pt2", {
        "{root}/" + SO_MEMBER: shared_object.read_bytes(),
        "{root}/data/aotinductor/model/model.wrapper_metadata.json": metadata,
    })


def _dirs(folder: Path) -> list[Path]:
    """Folders left in ``folder`` (onnxruntime's import-time telemetry drops a ``.ses`` file there)."""
    return [p for p in folder.iterdir() if p.is_dir()]


def _env(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    marker, tmp = tmp_path / "constructor-ran", tmp_path / "tmpdir"
    tmp.mkdir()
    return {"EDGEC_TEST_MARKER": str(marker), "TMPDIR": str(tmp)}, marker, tmp


def test_inspect_refuses_pt2_with_aotinductor_shared_object_before_loading(aoti_pt2: Path, tmp_path: Path) -> None:
    env, marker, tmp = _env(tmp_path)
    proc = run_cli("inspect", str(aoti_pt2), env=env)
    assert not marker.exists(), "the shared object's constructor ran"
    assert_one_line_error(proc, errors.EXIT_EXPORT, SO_MEMBER, "AOTInductor")
    assert _dirs(tmp) == []  # torch extracted the package into an aotinductor_* temp folder


def test_build_refuses_pt2_with_aotinductor_shared_object_before_loading(aoti_pt2: Path, tmp_path: Path) -> None:
    env, marker, tmp = _env(tmp_path)
    out = tmp_path / "out"
    proc = run_cli("build", str(aoti_pt2), "--target", "onnx", "--out", str(out), env=env)
    assert not marker.exists(), "the shared object's constructor ran"
    assert_one_line_error(proc, errors.EXIT_EXPORT, SO_MEMBER, "AOTInductor")
    assert _dirs(tmp) == []  # torch extracted the package into an aotinductor_* temp folder
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize(("members", "fragment"), [
    ({"{root}/extra/libevil.so.1": b"\x7fELF"}, "extra/libevil.so.1"),
    ({"{root}/extra/notes.txt": b"\x7fELF\x02\x01\x01\x00\xff\xfe"}, "not UTF-8 text"),
    ({"{root}/data/weights/model.pt": b"\x80\x04K\x01."}, "a pickle"),
    ({"{root}/data/constants/custom_obj_0": b"\x80\x04K\x01."}, "a pickle"),
    ({"{root}/data/constants/opaque_obj_0": b"\x80\x04K\x01."}, "a pickle"),
    ({"{root}/data/mtia/kernel.bin": b"x"}, "data/mtia/kernel.bin"),
    ({"{root}/data/executorch/model.pte": b"x"}, "data/executorch/model.pte"),
    ({"{root}/xl_model_weights/model_param_config": b"{}"}, "xl_model_weights"),
    ({"../../outside.json": b"{}"}, "outside the archive"),
    ({"/etc/passwd": b"x"}, "outside the archive"),
    ({"other_root/models/model.json": b"{}"}, "other_root/models/model.json"),
    ({"{root}/data/weights/weight_999": b"x" * 64}, None),
])
def test_load_refuses_members_not_written_by_torch_export_save(
        plain_pt2: Path, tmp_path: Path, members: dict[str, bytes], fragment: str | None) -> None:
    archive = _with_members(plain_pt2, tmp_path / "odd.pt2", members)
    if fragment is None:  # an unused raw payload is on the allow-list: it loads
        assert safe_load_pt2(archive).module()(torch.ones(1, 4)).shape == (1, 3)
        return
    with pytest.raises(errors.ExportError, match="refuses archive members") as info:
        safe_load_pt2(archive)
    assert fragment in info.value.message


def test_load_refuses_a_compressed_member_whose_size_could_be_a_bomb(plain_pt2: Path, tmp_path: Path) -> None:
    archive = _with_members(plain_pt2, tmp_path / "bomb.pt2", {"{root}/extra/big.txt": b"a" * (1 << 20)},
                            compress_type=zipfile.ZIP_DEFLATED)
    assert archive.stat().st_size < 64 << 10
    with pytest.raises(errors.ExportError, match="compressed or encrypted") as info:
        safe_load_pt2(archive)
    assert "extra/big.txt" in info.value.message


def test_load_refuses_a_duplicated_member_name(plain_pt2: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        archive = _with_members(plain_pt2, tmp_path / "dup.pt2", {"{root}/models/model.json": b"{}"})
    with pytest.raises(errors.ExportError, match="appears twice"):
        safe_load_pt2(archive)


@pytest.mark.parametrize("where", ["before", "comment"])
def test_load_refuses_a_zip_with_bytes_another_zip_reader_could_read_differently(
        plain_pt2: Path, tmp_path: Path, where: str) -> None:
    odd = tmp_path / f"{where}.pt2"
    if where == "before":
        odd.write_bytes(b"\0" * 512 + plain_pt2.read_bytes())
    else:
        shutil.copy(plain_pt2, odd)
        with zipfile.ZipFile(odd, "a") as zf:
            zf.comment = b"a second end record could hide here"
    with zipfile.ZipFile(odd) as zf:
        assert len(zf.namelist()) == len(zipfile.ZipFile(plain_pt2).namelist())  # Python's zipfile copes
    with pytest.raises(errors.ExportError, match="expected a .pt2"):
        safe_load_pt2(odd)


def test_load_refuses_a_weight_config_that_asks_for_pickle(tmp_path: Path) -> None:
    src = _save_plain(tmp_path / "src.pt2")
    root = _root(src)
    name = f"{root}/data/weights/model_weights_config.json"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp_path / "pickled.pt2", "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == name:
                config = json.loads(data)
                next(iter(config["config"].values()))["use_pickle"] = True
                data = json.dumps(config).encode()
            zout.writestr(info, data)
    with pytest.raises(errors.ExportError, match="pickled weight"):
        safe_load_pt2(tmp_path / "pickled.pt2")


def test_plain_programs_with_weights_buffers_constants_dynamic_shapes_and_extra_files_still_load(tmp_path: Path) -> None:
    path = _save_plain(tmp_path / "plain.pt2", extra_files={"notes.txt": "trained on digits"})
    result = TorchImporter()._load_pt2(path, None)  # type: ignore[arg-type]
    assert [s.name for s in result.artifact.inputs] == ["x"]
    assert isinstance(result.artifact.inputs[0].shape[0], str)  # dynamic batch survived
    module = safe_load_pt2(path).module()
    x = torch.randn(5, 4)
    with torch.no_grad():
        want = Plain().eval()
        want.load_state_dict(safe_load_pt2(path).state_dict)
        assert torch.allclose(module(x), want(x))


def test_inspect_of_a_plain_pt2_still_prints_its_interface(plain_pt2: Path) -> None:
    proc = run_cli("inspect", str(plain_pt2), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["kind"] == "pt2" and info["inputs"][0]["name"] == "x"
