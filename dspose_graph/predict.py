"""Top-down inference on a user's own images: a checkpoint (a path or a shipped weight name) in, keypoints out.

``Predictor(weights).predict(image, boxes)`` crops every person box the way the model was trained
(``Codec.center_scale``: the codec's rule for detected boxes, ``BOX_PADDING`` (1.25), the model's aspect ratio;
``warp_image`` to the input size), runs the persons of one image in batches through
:func:`~dspose_graph.eval.inference.predict_crops` (flip test when ``flip_test``, DARK, back into the original
image). Crop, flip shift and decoding follow the codec recorded in the checkpoint (``inference_spec``), i.e. the
one the model was trained with.
``precision``, ``channels_last`` and ``compile`` choose a fast path (``dspose_graph.models.runtime``; docs/speed.md).
An exported ``.onnx`` file (``dspose export onnx``) runs with onnxruntime instead of PyTorch
(:class:`~dspose_graph.export.OnnxModel`, the ``onnx`` extra): the same round trip, with the skeleton, sizes and
codec read from the file's metadata.

Shapes:
    P: persons (boxes) in one image, K: keypoints, (H, W): model input, (h, w): heatmap.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from dspose_graph.data import load_image, normalize_image, warp_image
from dspose_graph.data.codec import get_codec
from dspose_graph.data.transforms import BOX_PADDING
from dspose_graph.eval.coco_eval import rescore
from dspose_graph.eval.flip import flip_test_heatmaps
from dspose_graph.eval.inference import predict_crops
from dspose_graph.export import OnnxModel
from dspose_graph.models.checkpoint import inference_spec, load_model
from dspose_graph.models.runtime import check_device, prepare_model
from dspose_graph.weights import lookup_weights
from topology.schemas import KeypointSchema

log = logging.getLogger(__name__)


def check_schema(schema: KeypointSchema, expected: KeypointSchema, source: str) -> None:
    """Raise ``ValueError`` when a checkpoint's keypoints are not the ones the input data expects."""
    if tuple(schema.keypoints) != tuple(expected.keypoints):
        raise ValueError(
            f"{source}: weights are for the {schema.name!r} skeleton ({schema.num_keypoints} keypoints: "
            f"{', '.join(schema.keypoints[:4])}, ...) but the input expects {expected.name!r} "
            f"({expected.num_keypoints} keypoints: {', '.join(expected.keypoints[:4])}, ...)"
        )


def check_onnx_options(precision: str, channels_last: bool, compile: bool) -> None:
    """Refuse the PyTorch fast paths for an ONNX file, naming the option: onnxruntime runs the float32 graph."""
    for option, asked in (("precision=" + precision, precision != "fp32"), ("channels_last", channels_last),
                          ("compile", compile)):
        if asked:
            raise ValueError(f"{option} is a PyTorch fast path; an .onnx file runs its float32 graph in onnxruntime "
                             "(use a .pt checkpoint for PyTorch's fast paths)")


BOX_FIELDS = ("x", "y", "w", "h")
# No image is a million pixels across (JPEG stops at 65535); a larger box value is a broken detection, and
# 1e308 would overflow to inf in the crop arithmetic.
MAX_BOX_VALUE = 1e6


def box_problem(box: Sequence[Any]) -> str | None:
    """Why ``box`` is not a usable ``[x, y, w, h]`` (naming the field), or ``None`` when it is.

    Refused: not 4 numbers, a NaN/inf or beyond :data:`MAX_BOX_VALUE` value, ``w <= 0`` or ``h <= 0``.
    """
    if not isinstance(box, (list, tuple, np.ndarray)) or len(box) != 4:
        return f"must be [x, y, w, h], got {box!r}"
    for name, value in zip(BOX_FIELDS, box):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            return f"field {name!r} = {value!r} is not a number"
        if not np.isfinite(value) or abs(value) > MAX_BOX_VALUE:
            return f"field {name!r} = {value!r} is not a finite pixel value (|value| <= {MAX_BOX_VALUE:g})"
    for name, value in zip(BOX_FIELDS[2:], box[2:]):
        if value <= 0:
            return f"field {name!r} = {value!r} is not positive (an empty box)"
    return None


def _as_boxes(boxes: Any, width: int, height: int) -> np.ndarray:
    if boxes is None:
        return np.array([[0.0, 0.0, float(width), float(height)]])
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be a list of [x, y, w, h], got an array of shape {arr.shape}")
    for i, box in enumerate(arr):
        problem = box_problem(box)
        if problem:
            raise ValueError(f"box {i} {problem} (boxes are [x, y, w, h] with positive w and h)")
    return arr


def _as_scores(box_scores: Any, count: int) -> np.ndarray:
    if box_scores is None:
        return np.ones(count)
    scores = np.asarray(box_scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] != count:
        raise ValueError(f"{scores.shape[0]} box scores for {count} boxes")
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise ValueError(f"box score {int(bad[0])} = {scores[bad[0]]} is not a finite number")
    return scores


class Predictor:
    """Keypoints for the people in an image, from a dspose-graph checkpoint.

    Args:
        weights: checkpoint path (``dspose train`` output, or any file in the checkpoint format), the name of
            shipped weights (``dspose weights`` lists them), or an exported ``.onnx`` file (run by onnxruntime;
            ``pip install 'dspose-graph[onnx]'``).
        device: torch device for the model (for an ``.onnx`` file: ``cpu``, or ``cuda`` with onnxruntime-gpu).
        flip_test: average the heatmaps of the crop and its mirror image (the paper's test protocol).
        batch_size: persons per forward pass.
        decode: ``"dark"`` (default) or ``"argmax"``.
        expected_schema: if given, refuse weights whose keypoints differ (e.g. MPII weights on COCO boxes).
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` (CUDA only): autocast of the forward pass.
        channels_last: run the model in the NHWC memory format.
        compile: ``torch.compile`` the model (the first calls compile; a sparse graph head becomes dense).

    Attributes:
        model: the loaded model (the uncompiled module: for state dicts and export); ``None`` for an ONNX file.
        runner: what runs it: a :class:`~dspose_graph.models.runtime.PreparedModel`, or for an ONNX file an
            :class:`~dspose_graph.export.OnnxModel`.
    """

    def __init__(
        self,
        weights: str | Path,
        device: str | torch.device = "cpu",
        flip_test: bool = True,
        batch_size: int = 32,
        decode: str = "dark",
        expected_schema: KeypointSchema | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.weights = lookup_weights(weights)  # a shipped name -> its file; load_model / OnnxModel check it exists
        if isinstance(device, str):
            check_device(device, option="device")
        self.device = torch.device(device)
        self.flip_test = flip_test
        self.batch_size = batch_size
        self.decode = decode
        if self.weights.suffix == ".onnx":
            check_onnx_options(precision, channels_last, compile)
            self.model = None
            self.runner = OnnxModel(self.weights, self.device)
            self.schema: KeypointSchema = self.runner.schema
            codec, self.input_size, self.heatmap_size = self.runner.codec, self.runner.input_size, \
                self.runner.heatmap_size
        else:
            self.model, checkpoint = load_model(self.weights, self.device)
            # The weights never change after loading, so a compiled model is frozen (BatchNorm folded, casts once).
            self.runner = prepare_model(self.model, self.device, precision=precision, channels_last=channels_last,
                                        compile=compile, freeze=compile)
            self.schema = self.model.schema
            spec = inference_spec(checkpoint, self.model)
            codec, self.input_size, self.heatmap_size = spec.codec, spec.input_size, spec.heatmap_size
        if expected_schema is not None:
            check_schema(self.schema, expected_schema, str(self.weights))
        self.codec = get_codec(codec)  # crop, flip shift and decoding as the model was trained
        self.flip_index = torch.as_tensor(self.schema.flip_index, dtype=torch.long)

    def crop(self, image: np.ndarray, boxes: np.ndarray) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Normalised person crops ``(P, 3, H, W)`` with their centres and scales ``(P, 2)``."""
        aspect = self.input_size[0] / self.input_size[1]
        size = (image.shape[1], image.shape[0])
        centers, scales, crops = [], [], []
        for i, box in enumerate(boxes):
            center_scale = self.codec.center_scale(box, size, aspect, BOX_PADDING, detection=True)
            if center_scale is None:
                raise ValueError(f"box {i} = {list(box)} has no area inside the {size[0]}x{size[1]} image")
            center, scale = center_scale
            crops.append(normalize_image(warp_image(image, center, scale, 0.0, self.input_size, codec=self.codec)))
            centers.append(center)
            scales.append(scale)
        return torch.from_numpy(np.stack(crops)).to(self.device), np.stack(centers), np.stack(scales)

    @torch.no_grad()
    def keypoints(self, crops: torch.Tensor, centers: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image keypoints ``(P, K, 2)`` and scores ``(P, K)`` of crops ``(P, 3, H, W)`` cut at ``centers``/``scales``."""
        parts = [predict_crops(self.runner, crops[i:i + self.batch_size], centers[i:i + self.batch_size],
                               scales[i:i + self.batch_size], codec=self.codec, flip_index=self.flip_index,
                               heatmap_size=self.heatmap_size, flip_test=self.flip_test, decode=self.decode)
                 for i in range(0, crops.shape[0], self.batch_size)]
        return np.concatenate([p for p, _ in parts]), np.concatenate([s for _, s in parts])

    @torch.no_grad()
    def heatmaps(self, images: torch.Tensor) -> torch.Tensor:
        """Model heatmaps ``(P, K, h, w)`` for normalised crops ``(P, 3, H, W)``, flip-averaged if enabled."""
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = images[start:start + self.batch_size]
            if self.flip_test:
                out.append(flip_test_heatmaps(self.runner, batch, self.flip_index, self.codec))
            else:
                out.append(self.runner(batch))
        return torch.cat(out)

    def predict(
        self,
        image: str | Path | np.ndarray,
        boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
        box_scores: Sequence[float] | None = None,
    ) -> list[dict[str, Any]]:
        """Keypoints of each person box in ``image``.

        Args:
            image: a file path or an RGB ``uint8`` array ``(H, W, 3)``.
            boxes: person boxes ``[x, y, w, h]`` in image pixels; ``None`` = the whole image is one person.
            box_scores: detector confidence per box (default 1.0).

        Returns:
            One dict per box, in box order: ``"keypoints"`` ``(K, 3)`` float32 (x, y in image pixels, score),
            ``"box"`` ``[x, y, w, h]`` and ``"score"`` = box score x mean of the keypoint scores above 0.2.
        """
        if isinstance(image, (str, Path)):
            image = load_image(image)
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be an RGB uint8 array (H, W, 3), got dtype {image.dtype} shape {image.shape}")
        height, width = image.shape[:2]
        if height == 0 or width == 0:
            raise ValueError(f"image is {width}x{height} pixels: there is nothing to crop a person from")
        box_arr = _as_boxes(boxes, width, height)
        scores = _as_scores(box_scores, len(box_arr))
        if len(box_arr) == 0:
            return []
        points, maxvals = self.keypoints(*self.crop(image, box_arr))
        person_scores = rescore(maxvals, scores)
        keypoints = np.concatenate([points, maxvals[..., None]], axis=2).astype(np.float32)
        return [{"keypoints": keypoints[i], "box": [float(v) for v in box_arr[i]], "score": float(person_scores[i])}
                for i in range(len(box_arr))]
