"""Framework helpers shared by the importers (compiler) and the targets: ONNX loading and specs, per-layer
fidelity records and math, safe ``.pt2`` loading, and TensorFlow's import and serving SavedModel.

It sits between ``core`` and ``targets``: it may import ``core`` (and the runtime shims), never the
compiler or a target, so a target needs nothing from the compiler. Every framework (torch, tensorflow,
onnx) is imported inside functions only.
"""
