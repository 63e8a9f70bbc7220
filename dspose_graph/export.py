"""ONNX export of a trained model: images ``(B, 3, H, W)`` -> heatmaps ``(B, K, h, w)``, dynamic batch.

The graph is traced with PyTorch's TorchScript-based exporter (``dynamo=False``): it needs no extra
package and handles everything in our models except one op. The feature-space adjacency (Eq. 6-7) picks
each row's top-t neighbours with a *stable* sort followed by an in-place boolean ``scatter_``; neither
traces to ONNX. During export only, :func:`onnx_friendly_ops` swaps in :func:`topk_mask_by_rank`, which
selects the same entries by counting, for every candidate, how many entries outrank it (greater, or
equal with a lower index). That is the stable-sort order by definition and is tested equal on ties.

The ONNX file carries the preprocessing and the skeleton as metadata (``dspose.schema``,
``dspose.input_size``, ``dspose.heatmap_size``, ``dspose.mean``, ``dspose.std``) so that a deployment
needs nothing else to crop, normalise and name the keypoints.

Shapes:
    B: batch (dynamic in the exported graph), K: keypoints, (H, W) input, (h, w) heatmap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor, nn

import topology.feature
from dspose_graph.data import IMAGENET_MEAN, IMAGENET_STD
from topology.io import atomic_path

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "heatmaps"


def topk_mask_by_rank(similarity: Tensor, t: int) -> Tensor:
    """Export-friendly ``topology.feature.topk_mask``: same boolean ``(B, K, K)`` mask, no sort.

    Entry j of row i is kept when fewer than ``t`` entries of that row outrank it, where l outranks j
    if ``s_l > s_j``, or ``s_l == s_j`` and ``l < j``: exactly the first t of a stable descending sort.
    The diagonal is ranked first, as in the original. Cost ``O(B K^3)``, nothing for K = 17.
    """
    k = similarity.shape[-1]
    if not isinstance(t, int) or isinstance(t, bool) or not 1 <= t <= k:
        raise ValueError(f"top-t must be an integer in [1, K={k}], got {t!r}")
    idx = torch.arange(k, device=similarity.device)
    # An index comparison, not torch.eye: onnxruntime has no boolean EyeLike kernel.
    diagonal = idx.view(k, 1) == idx.view(1, k)
    s = similarity.detach().masked_fill(diagonal, float("inf"))
    s_j = s.unsqueeze(-1)  # (B, K, K_j, 1): the candidate
    s_l = s.unsqueeze(-2)  # (B, K, 1, K_l): its competitors
    lower = idx.view(1, k) < idx.view(k, 1)  # [j, l]: l < j
    outranks = (s_l > s_j) | ((s_l == s_j) & lower)
    return outranks.sum(dim=-1) < t


@contextlib.contextmanager
def onnx_friendly_ops() -> Iterator[None]:
    """Within the block, ``topology.feature`` selects top-t edges with :func:`topk_mask_by_rank`."""
    original = topology.feature.topk_mask
    topology.feature.topk_mask = topk_mask_by_rank
    try:
        yield
    finally:
        topology.feature.topk_mask = original


def onnx_metadata(model: nn.Module) -> dict[str, str]:
    """Key/value strings stored in the ONNX file: skeleton and preprocessing."""
    schema = getattr(model, "schema", None)
    meta = {
        "dspose.input_size": json.dumps([int(v) for v in model.input_size]),
        "dspose.heatmap_size": json.dumps([int(v) for v in model.heatmap_size]),
        "dspose.mean": json.dumps([float(v) for v in np.asarray(IMAGENET_MEAN).reshape(-1)]),
        "dspose.std": json.dumps([float(v) for v in np.asarray(IMAGENET_STD).reshape(-1)]),
        "dspose.layout": "NCHW RGB, normalised (x - mean) / std; output heatmaps NKhw",
    }
    if schema is not None:
        meta["dspose.schema"] = json.dumps(schema.to_dict())
    return meta


def export_onnx(model: nn.Module, path: str | Path, opset: int = DEFAULT_OPSET, example_batch: int = 2) -> Path:
    """Write ``model`` as ONNX with a dynamic batch axis; returns ``path``.

    Args:
        model: a DSPose/TokenPose model (``input_size`` and ``heatmap_size`` attributes); put in eval mode.
        path: output ``.onnx`` file (written atomically).
        opset: ONNX opset version.
        example_batch: batch size of the tracing input; any batch size runs afterwards.
    """
    import onnx

    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"ONNX output {path}: expected a file name ending in .onnx")
    if example_batch < 1:
        raise ValueError(f"example_batch must be >= 1, got {example_batch}")
    model = model.eval()
    w, h = (int(v) for v in model.input_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    example = torch.zeros(example_batch, 3, h, w, device=device)
    with atomic_path(path) as tmp, onnx_friendly_ops(), torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter warns that it is legacy and about traced Python ints (the fixed K, sizes).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )
        proto = onnx.load(str(tmp))
        for key, value in onnx_metadata(model).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    log.info("wrote %s (opset %d, dynamic batch)", path, opset)
    return path


def onnx_session(path: str | Path):
    """An onnxruntime CPU session for an exported file."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(path_or_session, images: np.ndarray | Tensor) -> np.ndarray:
    """Heatmaps from an exported model for normalised images ``(B, 3, H, W)``."""
    session = onnx_session(path_or_session) if isinstance(path_or_session, (str, Path)) else path_or_session
    x = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    return session.run([OUTPUT_NAME], {INPUT_NAME: x.astype(np.float32)})[0]


@torch.no_grad()
def compare_onnx(path: str | Path, model: nn.Module, images: Tensor) -> float:
    """Max absolute difference between onnxruntime's and PyTorch's heatmaps on ``images``."""
    model = model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    expected = model(images.to(device)).float().cpu().numpy()
    got = run_onnx(path, images)
    if got.shape != expected.shape:
        raise ValueError(f"{path}: ONNX output shape {got.shape} differs from PyTorch's {expected.shape}")
    return float(np.abs(got - expected).max())
