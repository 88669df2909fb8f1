"""Shipping trained classifiers: ONNX export with the labels and preprocessing inside the file, and inference
engines (PyTorch, onnxruntime) behind one interface.

Layer: above ``models`` (it loads checkpoints), below ``eval`` (``facelab predict`` runs on an engine).

>>> from facelab.deploy import export_onnx, load_engine           # doctest: +SKIP
>>> export_onnx("runs/train-...", "model.onnx").parity.max_abs_prob_diff   # doctest: +SKIP
>>> engine = load_engine("model.onnx")                            # doctest: +SKIP
>>> engine.probabilities(engine.preprocessing.to_input(images))    # doctest: +SKIP
"""

from facelab.deploy.engines import ENGINES, Engine, OnnxEngine, TorchEngine, load_engine
from facelab.deploy.metadata import ExportInfo, ExportSource, OnnxMeta, read_onnx_meta
from facelab.deploy.onnx import EXPORTERS, ExportReport, Parity, check_parity, export_onnx, export_path

__all__ = [
    "ENGINES",
    "EXPORTERS",
    "Engine",
    "ExportInfo",
    "ExportReport",
    "ExportSource",
    "OnnxEngine",
    "OnnxMeta",
    "Parity",
    "TorchEngine",
    "check_parity",
    "export_onnx",
    "export_path",
    "load_engine",
    "read_onnx_meta",
]
