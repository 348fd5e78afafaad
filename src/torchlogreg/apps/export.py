"""Export a run to ONNX, so the model runs without torchlogreg (ONNX Runtime, browsers, phones, C++).

    torchlogreg export runs/mnist --format onnx --out model.onnx

The ONNX graph takes ``images``, float32 (N, H, W) pixels in [0, 1] (uint8 pixels: divide by 255),
and gives ``probabilities`` (N, C; two columns for a binary run, as ``predict_proba``) and ``label``
(int64 (N,), the run's prediction rule, threshold included). Its metadata carries the class names,
input shape, preprocessing and the SHA-256 of the weights it came from. Needs the ``export`` extra.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..base.exceptions import CheckpointError, ConfigError, require
from ..base.storage import atomic_write_bytes, refuse_existing
from ..base.version import package_version
from ..core.model import decide, threshold_logit
from ..runfolder.checkpoints import PREPROCESSING, Run, load_run

EXTRA = "export"
INPUT_NAME = "images"
OUTPUT_NAMES = ("probabilities", "label")
DEFAULT_OPSET = 18  # ONNX Runtime 1.14 (2023) and later run it
OPSETS = range(18, 24)  # 18 .. 23
VERIFY_TOLERANCE = 1e-5  # largest probability difference accepted between ONNX Runtime and torch
INPUT_NOTE = "float32 (N, {shape}) pixels in [0, 1]; from uint8 pixels divide by 255"


class _Exportable(nn.Module):
    """The run's model with its prediction rule: float pixels in, (probabilities, label) out."""

    def __init__(self, run: Run):
        super().__init__()
        self.model = run.model
        self.threshold = run.threshold

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(images)
        return self.model.probabilities(logits), decide(logits, self.threshold)


def _check_opset(opset: int) -> None:
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise ConfigError(f"opset must be an integer from {OPSETS[0]} to {OPSETS[-1]}, got {opset!r}")


def _check_exporter() -> None:
    """onnx (to write the graph) and onnxruntime (to check it) are here, or a one-line DependencyError."""
    for module in ("onnx", "onnxruntime"):
        require(module, EXTRA)


def _check_target(out_path: Path, overwrite: bool) -> None:
    """`out_path` may take the model: not a folder, and new unless `overwrite`."""
    if out_path.is_dir():
        raise ConfigError(
            f"out_path {out_path} is a folder; give a file name such as model.onnx", parameter="out_path"
        )
    if out_path.suffix.lower() != ".onnx":  # (a model.pt holding ONNX would fail in torch.load)
        raise ConfigError(
            f"out_path {out_path} does not end in .onnx, the format written; give a name such as model.onnx "
            "(a run's weights for plain PyTorch are its model.safetensors)",
            parameter="out_path",
        )
    refuse_existing(out_path, "out_path", overwrite)


def onnx_metadata(run: Run) -> dict[str, str]:
    """The metadata_props of the exported model: strings, JSON where the value is structured."""
    shape = run.image_shape
    return {
        "class_names": json.dumps(list(run.class_names)),
        "input_shape": json.dumps(list(shape)),
        "input": INPUT_NOTE.format(shape=", ".join(map(str, shape))),
        "preprocessing": json.dumps(run.meta.get("preprocessing", PREPROCESSING)),
        "binary": json.dumps(bool(run.model.binary)),
        "threshold": json.dumps(run.threshold),
        "dataset": str(run.meta.get("dataset", "")),
        "weights_sha256": str(run.meta["weights_sha256"]),
        "torchlogreg_version": package_version(),
    }


def _to_onnx(run: Run, opset: int):
    """The ONNX ModelProto of the run's model and prediction rule, the batch size left free: a few
    nodes written with onnx.helper. By hand because the graph is that small: torch's (dynamo)
    exporter traced the same module in several seconds and needs onnxscript; `_verify` checks the
    result against torch either way."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = run.model
    weight = model.linear.weight.detach().to(torch.float32).numpy()
    bias = model.linear.bias.detach().to(torch.float32).numpy()
    outputs = weight.shape[0]
    nodes = [
        helper.make_node("Flatten", [INPUT_NAME], ["features"], axis=1),
        helper.make_node("Gemm", ["features", "weight", "bias"], ["logits"], transB=1),
    ]
    constants = [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")]
    if model.binary:  # P(positive) = sigmoid(the one logit): columns P(0), P(1); the label by threshold,
        # compared as logits (model.decide)
        constants += [
            numpy_helper.from_array(np.ones(1, np.float32), "one"),
            numpy_helper.from_array(np.array([1], np.int64), "column"),
            numpy_helper.from_array(np.array(threshold_logit(run.threshold), np.float32), "threshold"),
        ]
        nodes += [
            helper.make_node("Sigmoid", ["logits"], ["positive"]),
            helper.make_node("Sub", ["one", "positive"], ["negative"]),
            helper.make_node("Concat", ["negative", "positive"], [OUTPUT_NAMES[0]], axis=1),
            helper.make_node("Squeeze", ["logits", "column"], ["logit"]),
            helper.make_node("Greater", ["logit", "threshold"], ["decided"]),
            helper.make_node("Cast", ["decided"], [OUTPUT_NAMES[1]], to=TensorProto.INT64),
        ]
        outputs = 2
    else:
        nodes += [
            helper.make_node("Softmax", ["logits"], [OUTPUT_NAMES[0]], axis=1),
            helper.make_node("ArgMax", ["logits"], [OUTPUT_NAMES[1]], axis=1, keepdims=0),
        ]
    graph = helper.make_graph(
        nodes,
        "torchlogreg",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", *run.image_shape])],
        [
            helper.make_tensor_value_info(OUTPUT_NAMES[0], TensorProto.FLOAT, ["batch", outputs]),
            helper.make_tensor_value_info(OUTPUT_NAMES[1], TensorProto.INT64, ["batch"]),
        ],
        constants,
    )
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="torchlogreg")
    proto.ir_version = helper.find_min_ir_version_for(opsets)  # (any runtime that knows the opset reads it)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _near_a_tie(probabilities: torch.Tensor, binary: bool, threshold: float) -> torch.Tensor:
    """Rows whose label rounding may flip: the top two classes, or P(positive) and the threshold, tie."""
    if binary:
        return (probabilities[:, 1] - threshold).abs() <= VERIFY_TOLERANCE
    top2 = probabilities.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1] <= VERIFY_TOLERANCE


def _verify(blob: bytes, module: _Exportable, shape: tuple[int, ...], path: Path) -> None:
    """Run the exported bytes in ONNX Runtime on a fixed batch and check they agree with torch."""
    onnxruntime = require("onnxruntime", EXTRA)
    generator = torch.Generator().manual_seed(0)
    images = torch.cat(
        [torch.zeros(1, *shape), torch.ones(1, *shape), torch.rand(30, *shape, generator=generator)]
    )
    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    probabilities, labels = (torch.from_numpy(a) for a in session.run(None, {INPUT_NAME: images.numpy()}))
    with torch.no_grad():
        expected_probabilities, expected_labels = module(images)
    gap = float((probabilities - expected_probabilities).abs().max())
    differ = (labels != expected_labels) & ~_near_a_tie(
        expected_probabilities, module.model.binary, module.threshold
    )
    if gap > VERIFY_TOLERANCE or bool(differ.any()):
        raise CheckpointError(
            f"{path}: not written, the exported model disagrees with torch (probabilities differ by up to "
            f"{gap:.2g}, {int(differ.sum())} labels differ); please report it with your onnx and onnxruntime "
            "versions"
        )


def export_onnx(
    run_dir: str | Path, out_path: str | Path, *, opset: int = DEFAULT_OPSET, overwrite: bool = False
) -> Path:
    """Write the run in `run_dir` as an ONNX model at `out_path` (atomically); return the path.

    Input ``images``: float32 (N, H, W) in [0, 1], N free (uint8 pixels: divide by 255). Outputs
    ``probabilities`` (N, C) and ``label`` (int64 (N,)), the same as torchlogreg's predict_proba and
    predict with the run's threshold. The result is checked in ONNX Runtime before it is written.
    Refuses to replace an existing file unless `overwrite`.
    """
    _check_opset(opset)
    out_path = Path(out_path)
    _check_target(out_path, overwrite)
    _check_exporter()
    run = load_run(run_dir)
    exportable = _Exportable(run).eval()
    model = _to_onnx(run, opset)
    meta = onnx_metadata(run)
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = (
        f"torchlogreg logistic regression, classes {list(run.class_names)}; input {meta['input']}"
    )
    blob = model.SerializeToString()
    _verify(blob, exportable, run.image_shape, out_path)
    atomic_write_bytes(out_path, blob)
    return out_path
