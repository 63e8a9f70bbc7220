"""ONNX export of a trained model: images ``(B, 3, H, W)`` -> heatmaps ``(B, K, h, w)``, dynamic batch.

The graph is traced with PyTorch's TorchScript-based exporter (``dynamo=False``), which needs no package
beyond ``onnx``. The feature-space top-t selection (Eq. 6-7) is exportable because ``topology.feature.topk_mask``
ranks by counting instead of a stable sort.

The ONNX file carries the preprocessing, the skeleton and the codec as metadata (``dspose.schema``,
``dspose.input_size``, ``dspose.heatmap_size``, ``dspose.mean``, ``dspose.std``, ``dspose.codec``) so that a
deployment needs nothing else to crop, normalise, flip, decode and name the keypoints. :class:`OnnxModel` reads
them back and runs the file with onnxruntime as a forward function: ``Predictor("model.onnx")`` plugs it into the
same crop / flip test / decode round trip as a checkpoint. ``onnx`` and ``onnxruntime`` come with the ``onnx``
extra (``pip install 'dspose-graph[onnx]'``).

Top-t selection is discontinuous: where two similarities of a row differ by less than float rounding,
onnxruntime and PyTorch may keep different edges and the heatmaps then differ by more than rounding.
:func:`top_t_margin` measures that gap so that a failed comparison can say whether this is the cause.

Shapes:
    B: batch (dynamic in the exported graph), K: keypoints, (H, W) input, (h, w) heatmap.
"""

from __future__ import annotations

import inspect
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from dspose_graph.data import IMAGENET_MEAN, IMAGENET_STD
from dspose_graph.io import atomic_path
from topology.feature import cosine_similarity_matrix
from topology.schemas import KeypointSchema

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


def onnx_metadata(model: nn.Module, codec: str | None = None) -> dict[str, str]:
    """Key/value strings stored in the ONNX file: skeleton, preprocessing and (``codec``) the crop and decoding.

    :class:`OnnxModel` reads them back: together they are everything the PyTorch path takes from a checkpoint.
    """
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
    if codec is not None:
        meta["dspose.codec"] = codec
    return meta


def export_onnx(model: nn.Module, path: str | Path, opset: int = DEFAULT_OPSET, example_batch: int = 2,
                codec: str | None = None) -> Path:
    """Write ``model`` as ONNX with a dynamic batch axis; returns ``path``.

    Args:
        model: a DSPose/TokenPose model (``input_size`` and ``heatmap_size`` attributes); put in eval mode.
        path: output ``.onnx`` file (written atomically).
        opset: ONNX opset version.
        example_batch: batch size of the tracing input; any batch size runs afterwards.
        codec: the codec name the model was trained with (a checkpoint's ``inference_spec``), stored so that
            ``Predictor("model.onnx")`` crops and decodes as the checkpoint does; required by it.
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
    # torch >= 2.5 takes ``dynamo`` (and later defaults it to True); older versions only have this exporter.
    exporter = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter warns that it is legacy and about traced Python ints (the fixed K, sizes).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            **exporter,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )
        proto = onnx.load(str(tmp))
        for key, value in onnx_metadata(model, codec).items():
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


ONNX_EXTRA = "pip install 'dspose-graph[onnx]'"


def import_onnxruntime():
    """The ``onnxruntime`` module, or an ``ImportError`` naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(f"running an ONNX file needs onnxruntime: {ONNX_EXTRA} (or pip install onnxruntime)") \
            from None
    return onnxruntime


def onnx_session(path: str | Path, device: str | torch.device = "cpu", threads: int = 0):
    """An onnxruntime session for an exported file: CPU, or CUDA for a ``cuda`` device (``threads``: 0 = ORT's
    default intra-op threads)."""
    ort = import_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(f"{path}: device {device} needs onnxruntime's CUDA provider (the onnxruntime-gpu "
                             f"package); this onnxruntime has {ort.get_available_providers()}")
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable or invalid files
        raise ValueError(f"{path}: onnxruntime cannot load it as a model ({str(e).splitlines()[0]})") from None


def run_onnx(path_or_session, images: np.ndarray | Tensor) -> np.ndarray:
    """Heatmaps from an exported model for normalised images ``(B, 3, H, W)``."""
    session = onnx_session(path_or_session) if isinstance(path_or_session, (str, Path)) else path_or_session
    x = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    return session.run([OUTPUT_NAME], {INPUT_NAME: x.astype(np.float32)})[0]


class OnnxModel:
    """An exported file run by ONNX Runtime, called like the model: crops ``(B, 3, H, W)`` -> heatmaps.

    Reads back what :func:`onnx_metadata` stored: ``schema`` (a :class:`KeypointSchema`), ``input_size`` and
    ``heatmap_size`` ``(w, h)``, ``codec`` (its name). A file without them (not written by
    :func:`export_onnx`, or before the codec was stored) is refused with the missing key named.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", threads: int = 0) -> None:
        self.path = Path(path)
        self.session = onnx_session(self.path, device, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.schema = KeypointSchema.from_dict(self._field(meta, "dspose.schema"))
        self.input_size = tuple(int(v) for v in self._field(meta, "dspose.input_size"))
        self.heatmap_size = tuple(int(v) for v in self._field(meta, "dspose.heatmap_size"))
        for key, ours in (("dspose.mean", IMAGENET_MEAN), ("dspose.std", IMAGENET_STD)):
            if not np.allclose(self._field(meta, key), np.asarray(ours).reshape(-1)):
                raise ValueError(f"{self.path}: metadata {key} = {meta[key]} differs from the normalisation "
                                 f"dspose crops use ({list(np.asarray(ours).reshape(-1))})")
        if "dspose.codec" not in meta:
            raise ValueError(f"{self.path}: metadata has no 'dspose.codec' (the crop and decoding the weights were "
                             f"trained with); re-export it with `dspose export onnx`")
        self.codec = meta["dspose.codec"]

    def _field(self, meta: dict[str, str], key: str):
        if key not in meta:
            raise ValueError(f"{self.path}: metadata has no {key!r}; only files written by `dspose export onnx` "
                             f"carry the skeleton and preprocessing Predictor needs")
        try:
            return json.loads(meta[key])
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.path}: metadata {key!r} is not valid JSON ({e})") from None

    def __call__(self, crops: Tensor) -> Tensor:
        heatmaps = run_onnx(self.session, crops.float())
        return torch.from_numpy(heatmaps).to(crops.device)


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
    if atol is not None and not atol >= 0:
        raise ValueError(f"--atol must be a number >= 0, got {atol}")
    image = None
    if check_image and atol is not None:  # read before anything is written: a bad image fails first
        from dspose_graph.data import load_image

        image = load_image(check_image)
    predictor = Predictor(weights, flip_test=False)
    model = predictor.model
    path = export_onnx(model, Path(path), opset=opset, codec=predictor.codec.name)
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
