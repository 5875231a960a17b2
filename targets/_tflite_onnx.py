"""The ``tflite`` target's ONNX route: onnx2tf turns the ONNX graph into a Keras graph in a subprocess (it is
slow to import, prints a lot and may exit the interpreter on errors); the worker saves it as a SavedModel
whose signature keeps the ONNX input/output names and reports which tensors it made channels-last (3-D inputs
that reach no convolution or pooling, sequences and recurrent states, keep their layout: :func:`sequence_inputs`;
the Keras variables the graph reads are tracked on the saved module, which grouped convolutions need). The
model it gets has been through the passes in ``TfliteTarget.onnx_rewrites`` (exact rewrites of what onnx2tf
cannot turn into TFLite builtins; see :mod:`edgec.targets.tflite`).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from edgec.calibration.dataset import CalibrationSet
from edgec.core.bundle import write_npz
from edgec.core.errors import ExportError
from edgec.core.installed import require_installed
from edgec.core.types import Feed, ModelArtifact
from edgec.frameworks.tf_utils import SERVING
from edgec.targets import _tflite_layers
from edgec.targets._tflite_mixed import RecurrentLayers

CHANNELS_LAST = {3: ("NCW", "NWC"), 4: ("NCHW", "NHWC"), 5: ("NCDHW", "NDHWC")}
ONNX2TF_MODULES = ("onnx2tf", "tf_keras", "onnx_graphsurgeon", "sng4onnx", "psutil", "onnx", "onnxruntime")
ONNX2TF_TIMEOUT_S = 1800
SAMPLE_IMAGES = "calibration_image_sample_data_20x128x128x3_float32.npy"
"""onnx2tf loads this from the working directory for image-like inputs, or downloads it (fails offline)."""
RECURRENT_OPS = ("LSTM", "GRU", "RNN")
RECURRENT_HINT = ("the unroll_rnn pass left it to onnx2tf ('edgec build -v' logs why: a dynamic sequence length, "
                  "more than 512 steps, clip, other activations): fix the sequence length with --input, or build for "
                  "the onnx target")
"""What to try when onnx2tf fails on a recurrent node: the tflite route unrolls those it can (``unroll_rnn``)."""
OUTPUT_MOVES = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
"""ONNX ops that move values without changing them (:func:`has_output_concat`)."""
MISMATCH_LIMIT = 1e-2
"""Largest relative error between onnx2tf's float graph and the ONNX model before the route is refused."""


_CONVERTED: dict[tuple[str, str | None], Path] = {}
"""(ONNX digest, calibration digest) -> onnx2tf output folder. Builds of the same model at other precisions
in this process reuse it (onnx2tf takes seconds for a CNN and minutes for a transformer); removed at exit."""


def onnx_to_saved_model(artifact: ModelArtifact, calibration: CalibrationSet | None) -> tuple[
        Path, dict[str, tuple[int, ...]]]:
    """Convert an ONNX artifact with onnx2tf into a SavedModel named like the ONNX model.

    Returns the SavedModel directory and, per transposed tensor, the permutation source -> bundle.

    Raises:
        MissingDependencyError: onnx2tf or one of its run-time modules is missing.
        ExportError: onnx2tf failed (naming the ONNX op and the route) or its graph disagrees with ONNX.
    """
    key = (artifact.digest, calibration.digest if calibration is not None else None)
    folder = _CONVERTED.get(key)
    if folder is None or not (folder / "io.json").is_file():
        _check_onnx2tf()
        folder = Path(tempfile.mkdtemp(prefix="edgec-onnx2tf-"))
        atexit.register(shutil.rmtree, folder, True)
        try:
            _run_onnx2tf(artifact, folder, calibration)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        _CONVERTED[key] = folder
    io = json.loads((folder / "io.json").read_text())
    return folder / "saved_model", _read_perms(io, (folder / "onnx2tf.log").read_text(errors="replace"), artifact.path)


def _run_onnx2tf(artifact: ModelArtifact, folder: Path, calibration: CalibrationSet | None) -> None:
    sample = folder / "sample.npz"
    write_npz(sample, _check_feed(artifact, calibration))
    _write_sample_images(folder, calibration)
    io_json, log_path = folder / "io.json", folder / "onnx2tf.log"
    args = json.dumps({"onnx": str(artifact.path), "saved": str(folder / "saved_model"), "io": str(io_json),
                       "sample": str(sample)})
    code = "import sys; from edgec.targets._tflite_onnx import onnx2tf_worker; sys.exit(onnx2tf_worker(sys.argv[1]))"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run([sys.executable, "-c", code, args], cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                  env=env, timeout=ONNX2TF_TIMEOUT_S, check=False)
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = -1
    text = _strip_ansi(log_path.read_text(errors="replace"))
    log_path.write_text(text)
    if returncode != 0 or not io_json.is_file():
        io_json.unlink(missing_ok=True)
        raise _onnx2tf_error(artifact, text, returncode)


def _check_onnx2tf() -> None:
    require_installed(ONNX2TF_MODULES, "tflite", "the tflite target's ONNX route (onnx2tf)")


def _check_feed(artifact: ModelArtifact, calibration: CalibrationSet | None) -> Feed:
    if calibration is not None:
        return calibration.feed(0)
    rng = np.random.default_rng(0)
    feed = {}
    for spec in artifact.inputs:
        shape = tuple(d if isinstance(d, int) else (1 if i == 0 else 16) for i, d in enumerate(spec.shape))
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feed[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[spec.name] = np.ones(shape, dtype)
    return feed


def _write_sample_images(work_dir: Path, calibration: CalibrationSet | None) -> None:
    """The file onnx2tf would download: 20 images 128x128x3 in [0, 1], from calibration data when it is RGB."""
    images = np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)
    arrays = [a for a in (calibration.arrays.values() if calibration else []) if a.ndim == 5 and a.shape[2] == 3]
    if arrays:
        nchw = arrays[0][:, 0].astype(np.float32)
        rows = np.linspace(0, nchw.shape[2] - 1, 128).astype(int)
        cols = np.linspace(0, nchw.shape[3] - 1, 128).astype(int)
        picked = nchw[np.arange(20) % len(nchw)][:, :, rows][:, :, :, cols]
        images = np.ascontiguousarray(np.transpose(picked, (0, 2, 3, 1)))
    np.save(work_dir / SAMPLE_IMAGES, images)


def _read_perms(io: dict[str, Any], log: str, onnx_path: Path) -> dict[str, tuple[int, ...]]:
    perms = {name: tuple(p) for name, p in io["perms"].items() if list(p) != sorted(p)}
    for name, err in io["mismatch"].items():
        if err > MISMATCH_LIMIT:
            raise ExportError(f"onnx2tf converted output {name!r} wrongly: relative error {err:.3g} against the ONNX "
                              f"model (route: onnx -> onnx2tf){_known_cause(onnx_path)}",
                              hint="try the onnx target, or simplify the model", log=log)
    return perms


def _known_cause(onnx_path: Path) -> str:
    """What onnx2tf is known to get wrong in this model, as a clause naming the node (or nothing)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    for node in graph.node:
        if node.op_type in RECURRENT_OPS and len(node.input) > 4 and node.input[4]:
            return (f"; onnx2tf ignores the per-item sequence_lens of {node.op_type} {node.name!r}: pad the "
                    "sequences to one length and drop sequence_lens")
    return ""


def _onnx2tf_error(artifact: ModelArtifact, log: str, returncode: int) -> ExportError:
    if returncode == -1:
        return ExportError(f"onnx2tf did not finish within {ONNX2TF_TIMEOUT_S} s (route: onnx -> onnx2tf)", log=log)
    names = [re.sub(r"^wa/", "/", n) for n in re.findall(r"onnx_op_name: (\S+)", log)]  # onnx2tf's rename of "/x"
    reason = _last_error_line(log)
    if not names:
        return ExportError(f"onnx2tf failed (route: onnx -> onnx2tf): {reason}", log=log)
    op_type = _onnx_op_type(artifact.path, names[-1])
    dynamic = [s for s in artifact.inputs if any(not isinstance(d, int) for d in s.shape[1:])]
    hint = RECURRENT_HINT if op_type.split()[-1] in RECURRENT_OPS else "replace the op in the model, or build for the onnx target"
    if dynamic:  # onnx2tf often fails on dims it cannot infer; fixed shapes are its own advice
        fixed = " ".join(f"--input {s.name}:{'x'.join(str(d) if isinstance(d, int) else '1' if i == 0 else 'N' for i, d in enumerate(s.shape))}"
                         for s in dynamic)
        hint = f"the model has dynamic dims, which onnx2tf may not follow: fix them ({fixed}, N your size), or {hint}"
    return ExportError(f"onnx2tf cannot convert ONNX op {names[-1]!r} ({op_type}) (route: onnx -> onnx2tf): {reason}",
                       hint=hint, log=log)


def recurrent_nodes(path: Path) -> list[tuple[str, str]]:
    """(op type, name) of the ``LSTM``/``GRU``/``RNN`` nodes of an ONNX model (onnx2tf makes each a WHILE loop)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [(n.op_type, n.name) for n in graph.node if n.op_type in RECURRENT_OPS]


UNROLLED_STEP = re.compile(r"^(?P<node>.+?)(?:/forward|/reverse)?/t\d+/[^/]+$")
"""A node the ``unroll_rnn`` pass wrote for one step of a recurrent node: ``<node>[/forward|/reverse]/t<step>/<what>``
(its rule 6); every other node it wrote for that recurrent node is named ``<node>/...`` too, the ``Reshape``
``<node>/x_rows`` of its input first (what tells it from a model's own node named so)."""


def unrolled_recurrent_layers(path: Path) -> RecurrentLayers:
    """The recurrent nodes that the ``unroll_rnn`` pass unrolled (by their name in the source model) and the Keras
    layer names their nodes get in the onnx2tf worker (:func:`._tflite_layers.name_keras_layers`), which the
    converted ops carry as ``NodeInfo.layer``: what full-integer INT8 keeps float with the ``recurrent`` option."""
    import onnx

    from edgec.frameworks.fidelity import layer_names

    model = onnx.load(str(path), load_external_data=False)
    reshapes = {n.name for n in model.graph.node if n.op_type == "Reshape"}
    recurrent = sorted({m["node"] for n in model.graph.node if (m := UNROLLED_STEP.match(n.name))
                        and f"{m['node']}/x_rows" in reshapes})
    if not recurrent:
        return RecurrentLayers()
    names = layer_names(model)
    layers = frozenset(_tflite_layers.scope_name(names[n.name]) for n in model.graph.node
                       if any(n.name.startswith(f"{base}/") for base in recurrent))
    return RecurrentLayers(tuple(recurrent), layers, tuple(_tflite_layers.scope_name(b) for b in recurrent))


def has_output_concat(path: Path) -> bool:
    """Whether a graph output comes from a ``Concat`` through ops that only move values (a detector's boxes and
    scores): the full-integer INT8 build then checks the ranges it joins (:mod:`._tflite_mixed`)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    for output in graph.output:
        node = producer.get(output.name)
        while node is not None and node.op_type in OUTPUT_MOVES and node.input:
            node = producer.get(node.input[0])
        if node is not None and node.op_type == "Concat":
            return True
    return False


def _onnx_op_type(path: Path, node_name: str) -> str:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return next((f"op type {n.op_type}" for n in graph.node if n.name == node_name), "op type unknown")


def _last_error_line(log: str) -> str:
    unsupported = re.findall(r"ERROR: (\S+ OP is not yet implemented)", log)
    if unsupported:
        return unsupported[-1]
    lines = [re.sub(r"^(?:\w+\.)+(?=\w*(?:Error|Exception)\b)", "", ln.strip()) for ln in log.splitlines()
             if re.match(r"^(?:\w+\.)*\w*(Error|Exception)\b", ln.strip())]  # tensorflow.python...InvalidArgumentError
    lines += [ln.strip() for ln in log.splitlines() if ln.strip().startswith("'") and "must be" in ln]
    return (lines[-1] if lines else "see the converter log")[:300]


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def onnx2tf_worker(args_json: str) -> int:
    """Subprocess entry: ONNX -> onnx2tf Keras graph -> SavedModel with ONNX names -> layout/mismatch report.

    Exit codes: 0 converted, 2 onnx2tf failed (its log names the op), 3 a module is missing.
    """
    args = json.loads(args_json)
    try:
        import onnx
        import onnx2tf
        import tensorflow as tf
    except ImportError as exc:
        print(f"missing module: {exc}")
        return 3
    model = onnx.load(args["onnx"])
    renamed = scope_safe_node_names(model)
    input_names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    output_names = [o.name for o in model.graph.output]
    try:
        with tempfile.TemporaryDirectory() as scratch, _tflite_layers.onnx2tf_tensors() as tensors:
            keras_model = onnx2tf.convert(onnx_graph=model, output_folder_path=scratch, not_use_onnxsim=True,
                                          disable_model_save=True, output_signaturedefs=True, verbosity="info",
                                          keep_shape_absolutely_input_names=sequence_inputs(model) or None)
    except BaseException as exc:  # onnx2tf calls sys.exit(1) on some errors
        traceback.print_exc()
        failed = getattr(exc, "onnx_op_name", None)
        print(f"onnx_op_name: {renamed.get(failed, failed)}" if failed else "")
        return 2
    _name_layers(model, tensors)
    serve = _save_serving(tf, keras_model, input_names, output_names, Path(args["saved"]))
    shapes = [tuple(t.shape) for t in keras_model.inputs]
    report = _layout_report(serve, shapes, args, input_names, output_names)
    Path(args["io"]).write_text(json.dumps(report))
    return 0


SCOPE_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/>]")
"""Characters a TensorFlow name scope refuses (its pattern is ``^[A-Za-z0-9_.\\-/>]*$``)."""


def scope_safe_node_names(model: Any) -> dict[str, str]:
    """Rename the nodes whose names TensorFlow refuses as a scope (paddle2onnx writes ``Softmax@0``): onnx2tf
    passes some node names to TensorFlow ops as ``name=`` (``tf.nn.softmax``), which then raise
    ``'Softmax@0' is not a valid scope name``. Unsafe characters become ``_`` (made unique); returns new -> old
    name, so that an error names the node as the source model does. Layer names are unchanged:
    :func:`._tflite_layers.scope_name` makes the same replacement."""
    taken = {n.name for n in model.graph.node}
    renamed: dict[str, str] = {}
    for node in model.graph.node:
        if not SCOPE_UNSAFE.search(node.name):
            continue
        name = SCOPE_UNSAFE.sub("_", node.name)
        while name in taken:
            name += "_"
        taken.add(name)
        renamed[name], node.name = node.name, name
    return renamed


CHANNEL_OPS = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool",
                         "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization", "InstanceNormalization",
                         "LpNormalization", "Resize", "Upsample", "DepthToSpace", "SpaceToDepth"})
"""Ops that read a channel axis: a 3-D input that reaches one is ``[N, C, W]`` and onnx2tf makes it channels-last."""


def sequence_inputs(model: Any) -> list[str]:
    """The 3-D inputs that reach no op of :data:`CHANNEL_OPS`: sequences ``[N, T, C]`` and recurrent states
    ``[directions, N, H]``, which onnx2tf would otherwise transpose as if they were ``[N, C, W]`` (a streaming
    model's device would then transpose its state at every call). They keep the source layout."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {t.name for t in model.graph.initializer}
    return [v.name for v in model.graph.input if v.name not in initializers
            and len(v.type.tensor_type.shape.dim) == 3 and not _reaches_channel_op(v.name, consumers)]


def _reaches_channel_op(value: str, consumers: dict[str, list[Any]]) -> bool:
    seen, stack = {value}, [value]
    while stack:
        for node in consumers.get(stack.pop(), []):
            if node.op_type in CHANNEL_OPS:
                return True
            fresh = [o for o in node.output if o not in seen]
            seen.update(fresh)
            stack.extend(fresh)
    return False


def _name_layers(model: Any, tensors: dict[str, Any]) -> None:
    """Keras layers named after the ONNX layers (best effort: onnx2tf's names stay where this fails)."""
    try:
        print(f"edgec: {_tflite_layers.name_keras_layers(model, tensors)} Keras layers named after ONNX layers")
    except Exception:  # names are cosmetic: any failure, bugs included, keeps onnx2tf's; the traceback goes to the log
        traceback.print_exc()
        print("edgec: Keras layers keep onnx2tf's names")


def _save_serving(tf: Any, keras_model: Any, input_names: list[str], output_names: list[str], out: Path) -> Any:
    specs = [tf.TensorSpec(t.shape, t.dtype, name=n) for t, n in zip(keras_model.inputs, input_names, strict=True)]

    @tf.function(input_signature=specs)
    def serve(*args: Any) -> dict[str, Any]:
        outs = keras_model(list(args), training=False)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        return dict(zip(output_names, outs, strict=True))

    module = tf.Module()
    module.model = keras_model
    concrete = serve.get_concrete_function()
    # onnx2tf makes grouped convolutions Keras Conv layers whose kernels the functional model does not
    # track; a SavedModel refuses a function that captures an untracked variable, so every variable the
    # traced function reads is tracked on the module itself
    module.captured = list(concrete.variables)
    tf.saved_model.save(module, str(out), signatures={SERVING: concrete})
    return concrete


def _layout_report(serve: Any, shapes: list[tuple[int | None, ...]], args: dict[str, Any], input_names: list[str],
                   output_names: list[str]) -> dict[str, Any]:
    """Which tensors onnx2tf made channels-last, checked by running both graphs on one sample."""
    import onnxruntime as ort

    with np.load(args["sample"]) as data:
        feed = {n: data[n] for n in input_names}
    perms = {n: _input_perm(feed[n].shape, shape) for n, shape in zip(input_names, shapes, strict=True)}
    tf_args = [np.ascontiguousarray(np.transpose(feed[n], perms[n])) for n in input_names]
    got = {k: v.numpy() for k, v in serve(*tf_args).items()}
    session = ort.InferenceSession(args["onnx"], providers=["CPUExecutionProvider"])
    want = dict(zip(output_names, session.run(output_names, feed), strict=True))
    mismatch = {}
    for name in output_names:
        perms[name], mismatch[name] = _output_perm(want[name], got[name])
    return {"perms": {n: list(p) for n, p in perms.items()}, "mismatch": mismatch}


def _input_perm(source: tuple[int, ...], converted: tuple[int | None, ...]) -> tuple[int, ...]:
    identity = tuple(range(len(source)))
    if len(source) not in CHANNELS_LAST:
        return identity
    cl = channels_last(len(source))
    fits = all(c is None or c == source[p] for c, p in zip(converted, cl))
    return cl if fits else identity


def _output_perm(reference: np.ndarray, converted: np.ndarray) -> tuple[tuple[int, ...], float]:
    candidates = [tuple(range(reference.ndim))]
    if reference.ndim in CHANNELS_LAST:
        candidates.append(channels_last(reference.ndim))
    best: tuple[tuple[int, ...], float] = (candidates[0], float("inf"))
    for perm in candidates:
        moved = np.transpose(reference, perm)
        if moved.shape == converted.shape:
            scale = max(float(np.abs(moved).max()), 1e-6)
            err = float(np.abs(moved.astype(np.float64) - converted).max()) / scale
            best = min(best, (perm, err), key=lambda pe: pe[1])
    return best


def channels_last(rank: int) -> tuple[int, ...]:
    """The permutation NC... -> N...C for a tensor of ``rank`` dims."""
    return (0, *range(2, rank), 1)
