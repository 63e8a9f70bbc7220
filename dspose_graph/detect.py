"""Person boxes for top-down prediction when the user has none: a torchvision COCO detector, person class only.

MMPose's inferencer runs a person detector before the pose model; without one, ``dspose predict`` takes
the whole image as one person. :class:`PersonDetector` wraps torchvision's Faster R-CNN or RetinaNet
(trained on COCO, whose label 1 is ``person``), keeps the person boxes above a score threshold, at most
``max_persons`` per image, best first, clipped to the image, as ``[x, y, w, h]`` that
:meth:`dspose_graph.predict.Predictor.predict` crops directly. The COCO weights are fetched by
torchvision on first use (one download into ``torch.hub.get_dir()``); offline, the error names
``--boxes`` as the way to give boxes instead.

Shapes:
    M: raw detections of one image, P: persons kept, (H, W): image size. Images are RGB ``uint8``
    ``(H, W, 3)``; boxes ``(P, 4)`` ``[x, y, w, h]`` in image pixels, scores ``(P,)``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.models import detection

log = logging.getLogger(__name__)

# name -> (builder, its COCO weights, keyword of the builder's score threshold, of its per-image cap)
DETECTORS: dict[str, tuple[Callable[..., nn.Module], Any, str, str]] = {
    "fasterrcnn": (detection.fasterrcnn_resnet50_fpn_v2, detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
                   "box_score_thresh", "box_detections_per_img"),
    "fasterrcnn_mobilenet": (detection.fasterrcnn_mobilenet_v3_large_fpn,
                             detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
                             "box_score_thresh", "box_detections_per_img"),
    "retinanet": (detection.retinanet_resnet50_fpn_v2, detection.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1,
                  "score_thresh", "detections_per_img"),
}
PERSON_LABEL = 1  # "person" in torchvision's COCO label space (index 0 is the background)
# Raw detections per image before the person filter: people are most of what COCO detectors find in
# photos of people, and the cap keeps crowded images cheap.
RAW_DETECTIONS = 100


class DetectorUnavailableError(RuntimeError):
    """The detector's weights cannot be had here (no network on first use, or a damaged download)."""


def select_persons(
    boxes_xyxy: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    image_size: tuple[int, int],
    score_threshold: float = 0.5,
    max_persons: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """The person boxes of one image's raw detections, as ``[x, y, w, h]`` with their scores, best first.

    ``boxes_xyxy (M, 4)``, ``labels (M,)`` and ``scores (M,)`` as torchvision returns them; ``image_size``
    is ``(W, H)``. Kept: label :data:`PERSON_LABEL`, finite score ``>= score_threshold``, and a box of
    positive size once clipped to the image; then the ``max_persons`` best. Returns ``(P, 4)``, ``(P,)``.
    """
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    lab = np.asarray(labels).reshape(-1)
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not len(b) == len(lab) == len(sc):
        raise ValueError(f"detections disagree in length: {len(b)} boxes, {len(lab)} labels, {len(sc)} scores")
    width, height = image_size
    b = np.stack([b[:, 0].clip(0, width), b[:, 1].clip(0, height), b[:, 2].clip(0, width), b[:, 3].clip(0, height)], 1)
    xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    keep = (lab == PERSON_LABEL) & np.isfinite(sc) & (sc >= score_threshold) & np.isfinite(xywh).all(1) \
        & (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
    order = np.flatnonzero(keep)[np.argsort(-sc[keep], kind="stable")][:max_persons]
    return xywh[order], sc[order]


def _image_tensor(image: np.ndarray, index: int) -> torch.Tensor:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"image {index} must be an RGB uint8 array (H, W, 3), got dtype {a.dtype} shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float().div_(255.0)


class PersonDetector:
    """Person boxes for RGB images from a torchvision COCO detector.

    Args:
        name: one of :data:`DETECTORS` (``fasterrcnn``: ResNet-50 FPN v2, box AP 46.7 on COCO; ``retinanet``;
            ``fasterrcnn_mobilenet``: faster on a CPU, box AP 32.8).
        score_threshold: keep persons scoring at least this (0.5 by default, as MMPose's demo).
        max_persons: keep at most this many persons per image, best first.
        batch_size: images per forward pass in :meth:`detect`.
        device: torch device.
        pretrained: fetch torchvision's COCO weights (first use needs a network); ``False`` builds randomly
            initialised weights, for tests of the code path.
        min_size: shorter image side the detector resizes to (torchvision's default when ``None``: 800;
            320 for the mobilenet variant's speed).
    """

    def __init__(
        self,
        name: str = "fasterrcnn",
        score_threshold: float = 0.5,
        max_persons: int = 20,
        batch_size: int = 4,
        device: str | torch.device = "cpu",
        pretrained: bool = True,
        min_size: int | None = None,
    ) -> None:
        if name not in DETECTORS:
            raise ValueError(f"unknown detector {name!r}; valid: {', '.join(DETECTORS)}")
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"detector score threshold must be in [0, 1], got {score_threshold}")
        for field, value in (("max_persons", max_persons), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"detector {field} must be a positive integer, got {value!r}")
        self.name = name
        self.score_threshold = float(score_threshold)
        self.max_persons = max_persons
        self.batch_size = batch_size
        self.device = torch.device(device)
        builder, weights, thresh_kw, cap_kw = DETECTORS[name]
        kwargs: dict[str, Any] = {thresh_kw: self.score_threshold, cap_kw: RAW_DETECTIONS}
        if min_size is not None:
            kwargs["min_size"] = int(min_size)
        self.model = _build(builder, weights if pretrained else None, name, kwargs).eval().to(self.device)

    @torch.inference_mode()
    def detect(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Person boxes ``(P, 4)`` ``[x, y, w, h]`` and scores ``(P,)`` of every image, ``batch_size`` per pass."""
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            tensors = [_image_tensor(im, start + i).to(self.device) for i, im in enumerate(chunk)]
            for image, found in zip(chunk, self.model(tensors)):
                height, width = np.asarray(image).shape[:2]
                out.append(select_persons(found["boxes"].cpu().numpy(), found["labels"].cpu().numpy(),
                                          found["scores"].cpu().numpy(), (width, height),
                                          self.score_threshold, self.max_persons))
        log.debug("%s: %s person(s) in %d image(s)", self.name, [len(s) for _, s in out], len(images))
        return out

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes and scores of one image (the arguments ``Predictor.predict`` takes)."""
        return self.detect([image])[0]


def _build(builder: Callable[..., nn.Module], weights: Any, name: str, kwargs: dict[str, Any]) -> nn.Module:
    """The torchvision detector, with its COCO weights (fetched once, cached by torch.hub) or random ones."""
    if weights is None:
        return builder(weights=None, weights_backbone=None, **kwargs)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        return builder(weights=weights, progress=False, **kwargs)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; a damaged download fails torch's hash check
        reason = str(getattr(e, "reason", None) or e).strip().splitlines()[0]
        raise DetectorUnavailableError(
            f"person detector {name!r}: cannot fetch its COCO weights {weights.url} into {cache} ({reason}). "
            f"The first use needs a network connection; offline, give person boxes with --boxes "
            f"(COCO detection results) or copy {Path(weights.url).name} into {cache}"
        ) from e
