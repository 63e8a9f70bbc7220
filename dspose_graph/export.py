"""ONNX export of a trained model: images ``(B, 3, H, W)`` -> heatmaps ``(B, K, h, w)``, dynamic batch.

The graph is traced with PyTorch's TorchScript-based exporter (``dynamo=False``), which needs no package
beyond ``onnx``. The feature-space top-t selection (Eq. 6-7) is exportable because ``dspose_graph.graph.feature.topk_mask``
ranks by counting instead of a stable sort.

The ONNX file carries the preprocessing and the skeleton as metadata (``dspose.schema``,
``dspose.input_size``, ``dspose.heatmap_size``, ``dspose.mean``, ``dspose.std``) so that a deployment
needs nothing else to crop, normalise and name the keypoints.

Top-t selection is discontinuous: where two similarities of a row differ by less than float rounding,
onnxruntime and PyTorch may keep different edges and the heatmaps then differ by more than rounding.
:func:`top_t_margin` measures that gap so that a failed comparison can say whether this is the cause.

Shapes:
    B: batch (dynamic in the exported graph), K: keypoints, (H, W) input, (h, w) heatmap.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from dspose_graph.data import IMAGENET_MEAN, IMAGENET_STD
from dspose_graph.graph.feature import cosine_similarity_matrix
from dspose_graph.io import atomic_path

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
# Opset 14 brought the fused attention operator (aten::scaled_dot_product_attention) our Transformer exports
# to; 23 is the newest that torch 2.14's exporter writes (torch.onnx._constants.ONNX_MAX_OPSET).
MIN_OPSET, MAX_OPSET = 14, 23
INPUT_NAME = "images"
OUTPUT_NAME = "heatmaps"


def check_opset(opset: int) -> None:
    """``ValueError`` naming the valid range for an opset this model cannot be exported to."""
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"--opset {opset}: expected an ONNX opset from {MIN_OPSET} (the first with the attention "
                         f"operator) to {MAX_OPSET} (the newest this torch exports)")


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
    check_opset(opset)
    model = model.eval()
    w, h = (int(v) for v in model.input_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    example = torch.zeros(example_batch, 3, h, w, device=device)
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
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
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as e:  # its message names the temporary file: name the user's
            raise ValueError(f"ONNX output {path}: the exported graph fails onnx's checker: "
                             f"{str(e).replace(str(tmp), str(path))}") from None
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


@torch.no_grad()
def top_t_margin(model: nn.Module, images: Tensor) -> float | None:
    """Smallest gap, over all rows and samples, between the t-th and (t+1)-th cosine similarity of A_f.

    A gap near float rounding (~1e-7) means the kept edges, and so the heatmaps, can change with the
    arithmetic (ONNX vs PyTorch, CPU vs GPU). ``None`` for models without a graph head.
    """
    head = getattr(model, "head", None)
    layers, t = getattr(head, "layers", None), getattr(head, "t", None)
    if layers is None or t is None:
        return None
    inputs: list[Tensor] = []
    hooks = [layer.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach())) for layer in layers]
    try:
        model.eval()(images)
    finally:
        for hook in hooks:
            hook.remove()
    if getattr(head, "af_source", "layer") == "tokens":
        inputs = inputs[:1]
    margins = []
    for x in inputs:
        sim = cosine_similarity_matrix(x.float())
        k = sim.shape[-1]
        if t >= k:
            continue
        eye = torch.eye(k, dtype=torch.bool, device=sim.device)
        ranked = torch.sort(sim.masked_fill(eye, float("inf")), dim=-1, descending=True).values
        margins.append(float((ranked[..., t - 1] - ranked[..., t]).min()))
    return min(margins) if margins else None


def check_export_options(precision: str = "fp32", channels_last: bool = False, compile: bool = False) -> None:
    """Refuse the ``models.runtime`` fast paths that an ONNX file cannot carry, naming the option.

    The exported graph is float32 NCHW: autocast is a PyTorch runtime context (traced, the graph would hold
    float32 operators anyway), the memory format of the tensors is not part of an ONNX graph (onnxruntime picks
    its own layouts) and ``torch.compile`` makes Python code faster, not a graph to export.
    """
    if precision != "fp32":
        raise ValueError(f"--precision {precision}: ONNX export writes a float32 graph; export in fp32 and run the "
                         "file in reduced precision with your runtime's tools (e.g. onnxruntime's float16 "
                         "conversion), or use Predictor(precision=...) for PyTorch inference")
    if channels_last:
        raise ValueError("--channels-last: an ONNX graph has no memory format (onnxruntime chooses its own "
                         "layouts); export without it")
    if compile:
        raise ValueError("--compile: torch.compile speeds up PyTorch execution and produces nothing ONNX can "
                         "store; export without it")


def export_checkpoint(weights: str | Path, path: str | Path, opset: int = DEFAULT_OPSET,
                      check_image: str | Path | None = None, atol: float | None = 1e-4, precision: str = "fp32",
                      channels_last: bool = False, compile: bool = False) -> tuple[Path, float | None, str]:
    """Export checkpoint ``weights`` to ONNX ``path`` and compare onnxruntime with PyTorch on one input.

    The input is the whole of ``check_image`` as one person crop, else a seeded random batch of 2.
    Returns ``(path, max |onnxruntime - PyTorch|, what the input was)``; with ``atol=None`` the check is
    skipped (``None`` difference). Above ``atol`` a ``ValueError`` says so, and when near-tied top-t
    similarities explain it (:func:`top_t_margin`), says that too. ``precision``, ``channels_last`` and
    ``compile`` other than fp32 eager are refused (:func:`check_export_options`).
    """
    from dspose_graph.predict import Predictor

    check_opset(opset)
    check_export_options(precision, channels_last, compile)
    image = None
    if check_image and atol is not None:  # read before anything is written: a bad image fails first
        from dspose_graph.data import load_image

        image = load_image(check_image)
    predictor = Predictor(weights, flip_test=False)
    model = predictor.model
    path = export_onnx(model, Path(path), opset=opset)
    if atol is None:
        return path, None, ""
    if image is not None:
        crops, _, _ = predictor.crop(image, np.array([[0.0, 0.0, image.shape[1], image.shape[0]]]))
        what = Path(check_image).name
    else:
        w, h = model.input_size
        crops = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
        what = "a seeded random batch of 2"
    diff = compare_onnx(path, model, crops)
    if diff > atol:
        margin = top_t_margin(model, crops)
        hint = ""
        if margin is not None and margin < 1e-6:
            hint = (f"; the model's top-t feature edges are decided by float rounding on this input (smallest gap "
                    f"between the t-th and (t+1)-th similarity: {margin:.1e}), so the two runtimes keep different "
                    f"edges: typical of an undertrained model whose keypoint tokens are nearly parallel")
        raise ValueError(f"{path}: onnxruntime output differs from PyTorch by {diff:.3e} > --atol {atol:g}{hint}")
    return path, diff, what
