"""Image decoding, the crop warp and ImageNet normalisation.

Images are RGB ``uint8`` arrays ``(H, W, 3)`` until :func:`normalize_image` turns a crop into the
``float32 (3, H, W)`` tensor layout the models take.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from dspose_graph.data.codec import Codec, get_codec
from dspose_graph.data.transforms import crop_affine

# torchvision / timm ImageNet statistics, RGB order, for images scaled to [0, 1].
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file into an RGB ``uint8 (H, W, 3)`` array.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for one that does not decode
    (truncated, not an image). EXIF orientation is ignored, as COCO/MPII annotations are in the stored
    pixel frame.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.size == 0:
        raise ValueError(f"image file {path} could not be decoded (corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def flip_matrix(output_size: Sequence[int], udp: bool | None = None, codec: str | Codec | None = None) -> np.ndarray:
    """3x3 mirror about the crop's vertical centre line, in output-grid coordinates.

    The centre line is where :func:`crop_affine` puts the box centre: ``w / 2`` for the plain (HRNet) affine,
    ``(w - 1) / 2`` for the UDP and TokenPose ones. Mirroring there equals HRNet's "flip the whole image,
    then crop about the flipped centre".
    """
    plain = get_codec(codec, udp).affine == "plain"
    cx = output_size[0] / 2.0 if plain else (output_size[0] - 1.0) / 2.0
    return np.array([[-1.0, 0.0, 2.0 * cx], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def crop_matrix(
    center: Sequence[float],
    scale: Sequence[float],
    rotation: float,
    output_size: Sequence[int],
    flip: bool = False,
    udp: bool | None = None,
    codec: str | Codec | None = None,
) -> np.ndarray:
    """2x3 affine image -> output grid of a (possibly mirrored) crop; see ``transforms.crop_affine``.

    The crop is rotated first and mirrored second, so ``flip`` with ``rotation`` r equals HRNet's
    "mirror the image, then crop with rotation -r".
    """
    codec = get_codec(codec, udp)
    m = crop_affine(center, scale, rotation, output_size, codec=codec)
    if flip:
        m = (flip_matrix(output_size, codec=codec) @ np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
    return m


def warp_image(
    image: np.ndarray,
    center: Sequence[float],
    scale: Sequence[float],
    rotation: float,
    output_size: Sequence[int],
    flip: bool = False,
    udp: bool | None = None,
    codec: str | Codec | None = None,
) -> np.ndarray:
    """Cut the box ``center``/``scale`` (px, padded) rotated by ``rotation`` degrees out of ``image``.

    Returns an array of ``output_size`` (w, h) with the image's dtype and channels; outside the image
    is black. ``flip`` mirrors the crop (keypoints must then be permuted with ``schema.flip_index``).
    """
    m = crop_matrix(center, scale, rotation, output_size, flip=flip, udp=udp, codec=codec)
    return cv2.warpAffine(
        image, m, (int(output_size[0]), int(output_size[1])),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


# (256, 3) table uint8 value -> normalised float per channel: one lookup per pixel instead of float math.
_NORMALIZE_LUT = ((np.arange(256, dtype=np.float64)[:, None] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def normalize_image(image: np.ndarray) -> np.ndarray:
    """RGB ``uint8 (H, W, 3)`` -> ImageNet-normalised ``float32 (3, H, W)``."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"normalize_image expects an RGB uint8 (H, W, 3) array, got {image.dtype} {image.shape}")
    chw = image.transpose(2, 0, 1)
    out = np.empty(chw.shape, dtype=np.float32)
    for c in range(3):
        np.take(_NORMALIZE_LUT[:, c], chw[c], out=out[c])
    return out
