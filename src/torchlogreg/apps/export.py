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

import torch
from torch import nn

from ..base.exceptions import CheckpointError, ConfigError, DependencyError, require
from ..base.storage import atomic_write_bytes, refuse_existing
from ..base.version import package_version
from ..core.model import decide
from ..runfolder.checkpoints import PREPROCESSING, Run, load_run

EXTRA = "export"
INPUT_NAME = "images"
OUTPUT_NAMES = ("probabilities", "label")
DEFAULT_OPSET = 18  # the torch exporter's own opset; ONNX Runtime 1.14 (2023) and later run it
OPSETS = range(18, 24)  # 18 .. 23: what torch's exporter writes without falling back
VERIFY_TOLERANCE = 1e-5  # largest probability difference accepted between ONNX Runtime and torch
MIN_TORCH = (2, 6)  # torch.onnx.export(dynamo=True, external_data=False) giving an ONNXProgram
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
    """torch's exporter and what it needs are here, or a one-line DependencyError."""
    if torch.__version__ < MIN_TORCH:
        raise DependencyError(
            f"ONNX export needs torch {'.'.join(map(str, MIN_TORCH))} or later, found {torch.__version__}: "
            "pip install -U torch"
        )
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require(module, EXTRA)


def _check_target(out_path: Path, overwrite: bool) -> None:
    """`out_path` may take the model: not a folder, and new unless `overwrite`."""
    if out_path.is_dir():
        raise ConfigError(
            f"out_path {out_path} is a folder; give a file name such as model.onnx", parameter="out_path"
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


def _to_onnx(module: _Exportable, shape: tuple[int, ...], opset: int):
    """The ONNX ModelProto of `module` from torch's (dynamo) exporter, the batch size left free."""
    example = torch.zeros(2, *shape)  # two rows: a batch of one would be specialised as a constant
    program = torch.onnx.export(
        module,
        (example,),
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    return program.model_proto


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
            f"{gap:.2g}, {int(differ.sum())} labels differ); please report it with your torch and onnxscript "
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
    model = _to_onnx(exportable, run.image_shape, opset)
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
