"""Image decoding, the crop warp and ImageNet normalisation.

Images are RGB ``uint8`` arrays ``(H, W, 3)`` until :func:`normalize_image` turns a crop into the
``float32 (3, H, W)`` tensor layout the models take.

Reduced decoding: a person crop of a large photo often needs far fewer pixels than the photo has. libjpeg
can decode at 1/2, 1/4 or 1/8 size directly in the DCT domain (OpenCV's ``IMREAD_REDUCED_COLOR_*``),
several times faster than a full decode. :func:`decode_reduction` picks the largest factor that still leaves
``DECODE_MARGIN`` source pixels per output pixel, and :func:`reduced_crop_matrix` maps the crop onto the
smaller image (a reduced pixel ``i`` is the average of full pixels ``r*i .. r*i+r-1``, centred at
``r*i + (r-1)/2``), so keypoints and targets stay in full-image coordinates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from dspose_graph.data.codec import Codec, get_codec

# torchvision / timm ImageNet statistics, RGB order, for images scaled to [0, 1].
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


# Source pixels per output pixel kept after a reduced decode: at 1 the reduced image (a box average, which
# aliases less than bilinear on the full image) is still as fine as the crop (tests/test_data_decode.py).
DECODE_MARGIN = 1.0
_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_reduction(scale: Sequence[float], output_size: Sequence[int], margin: float = DECODE_MARGIN) -> int:
    """Largest factor r in {1, 2, 4, 8} with ``scale / r >= margin * output_size`` on both axes.

    ``scale`` is the crop box ``(w, h)`` in image pixels, ``output_size`` the crop ``(w, h)``; ``margin <= 0``
    is refused (use 1 = no reduction by calling :func:`load_image` without ``reduction``).
    """
    if margin <= 0:
        raise ValueError(f"decode margin must be > 0, got {margin}")
    ratio = min(float(scale[0]) / float(output_size[0]), float(scale[1]) / float(output_size[1])) / margin
    return max((r for r in _REDUCED_FLAGS if r <= ratio), default=1)


def reduced_crop_matrix(m: np.ndarray, reduction: int) -> np.ndarray:
    """The 2x3 crop affine ``m`` (full image -> crop) re-expressed for an image decoded at ``1/reduction``."""
    if reduction == 1:
        return m
    offset = (reduction - 1) / 2.0
    to_full = np.array([[reduction, 0.0, offset], [0.0, reduction, offset], [0.0, 0.0, 1.0]])
    return m @ to_full


def opencv_single_thread(worker_id: int = 0) -> None:
    """One OpenCV thread, to call in the parent before DataLoader workers fork (they inherit it): each worker's
    own pool would oversubscribe the cores. Not a ``worker_init_fn``: ``cv2.setNumThreads`` inside a forked
    worker deadlocks once the parent has used OpenCV's pool."""
    cv2.setNumThreads(1)


def load_image(path: str | Path, reduction: int = 1) -> np.ndarray:
    """Decode an image file into an RGB ``uint8 (H, W, 3)`` array, at ``1/reduction`` size (1, 2, 4 or 8).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for one that does not decode
    (truncated, not an image) or a bad ``reduction``. EXIF orientation is ignored, as COCO/MPII annotations
    are in the stored pixel frame.
    """
    path = Path(path)
    if reduction not in _REDUCED_FLAGS:
        raise ValueError(f"{path}: decode reduction must be one of {sorted(_REDUCED_FLAGS)}, got {reduction!r}")
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    image = cv2.imread(str(path), _REDUCED_FLAGS[reduction] | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.size == 0:
        raise ValueError(f"image file {path} could not be decoded (corrupt or not an image)")
    if _jpeg_truncated(path):
        raise ValueError(f"image file {path} is a truncated JPEG (its data ends before the image does)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _jpeg_truncated(path: Path) -> bool:
    """Whether a JPEG file is cut short: OpenCV decodes those with a grey lower part and only a warning.

    A complete JPEG ends with the end-of-image marker ``FF D9`` (checked on the last bytes: cheap). A file
    with bytes after the marker (camera trailers) is decoded once more by Pillow, which raises on truncation.
    """
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return False
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 64))
        if f.read().rstrip(b"\x00").endswith(b"\xff\xd9"):
            return False
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except OSError:
        return True
    return False


def warp_image(
    image: np.ndarray,
    center: Sequence[float],
    scale: Sequence[float],
    rotation: float,
    output_size: Sequence[int],
    flip: bool = False,
    codec: str | Codec | None = None,
) -> np.ndarray:
    """Cut the box ``center``/``scale`` (px, padded) rotated by ``rotation`` degrees out of ``image``.

    Returns an array of ``output_size`` (w, h) with the image's dtype and channels; outside the image
    is black. ``flip`` mirrors the crop (keypoints must then be permuted with ``schema.flip_index``). The crop
    matrix is ``codec``'s (default ``"tokenpose"``; ``Codec.crop_matrix``).
    """
    m = get_codec(codec).crop_matrix(center, scale, rotation, output_size, flip=flip)
    return cv2.warpAffine(
        image, m, (int(output_size[0]), int(output_size[1])),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


# Normalisation is two float32 operations per pixel, ``v * scale + shift`` per channel. The (256, 3) table caches
# them for every uint8 value (one lookup per pixel in the workers) and normalize_batch runs the same two
# operations on a batch, so both give the same bits.
_SCALE = (1.0 / (255.0 * IMAGENET_STD.astype(np.float64))).astype(np.float32)
_SHIFT = (-IMAGENET_MEAN.astype(np.float64) / IMAGENET_STD.astype(np.float64)).astype(np.float32)
_NORMALIZE_LUT = np.arange(256, dtype=np.float32)[:, None] * _SCALE + _SHIFT


# Sample image formats a dataset can hand out: normalised float32, or the crop's uint8 pixels that
# :func:`normalize_batch` normalises after the transfer (a quarter of the bytes through workers and to the GPU).
IMAGE_DTYPES = ("float32", "uint8")


def normalize_batch(images: torch.Tensor) -> torch.Tensor:
    """A batch of ``uint8 (B, 3, H, W)`` crops -> the float32 ImageNet-normalised input, where the batch is.

    The float32 operations :func:`normalize_image`'s table caches, so the result is bit-identical to a float32
    sample's; float32 batches pass through unchanged. Call it after moving the batch to its device.
    """
    if images.dtype == torch.float32:
        return images
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"normalize_batch expects uint8 (B, 3, H, W) or float32 images, got {images.dtype} "
                         f"{tuple(images.shape)}")
    scale, shift = _normalize_constants(images.device)
    return images.float().mul_(scale).add_(shift)


# Per device, the (3, 1, 1) scale and shift of normalize_batch: copied there once, not every batch (a copy from
# pageable host memory blocks the host until the GPU has finished the work queued before it).
_CONSTANTS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _normalize_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    cached = _CONSTANTS.get(device)
    if cached is None:
        cached = (torch.from_numpy(_SCALE)[:, None, None].to(device), torch.from_numpy(_SHIFT)[:, None, None].to(device))
        _CONSTANTS[device] = cached
    return cached


def normalize_image(image: np.ndarray) -> np.ndarray:
    """RGB ``uint8 (H, W, 3)`` -> ImageNet-normalised ``float32 (3, H, W)``."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"normalize_image expects an RGB uint8 (H, W, 3) array, got {image.dtype} {image.shape}")
    chw = image.transpose(2, 0, 1)
    out = np.empty(chw.shape, dtype=np.float32)
    for c in range(3):
        np.take(_NORMALIZE_LUT[:, c], chw[c], out=out[c])
    return out
