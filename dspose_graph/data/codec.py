"""Codecs: one object per convention that crops a person, encodes its targets and decodes heatmaps back.

A model is only as exact as the agreement between how its training targets were drawn and how its heatmaps are
read back. A :class:`Codec` owns every step of that round trip, so that encoding and decoding cannot drift
apart: the crop matrix between image and crop (:meth:`Codec.crop_matrix`), the box rule
(:meth:`Codec.center_scale`), the Gaussian targets (:meth:`Codec.encode`), the flip-test mapping
(:meth:`Codec.flip_back`), decoding with its DARK border (:meth:`Codec.decode`) and the map back to image pixels
(:meth:`Codec.to_image`). The named codecs of :data:`CODECS`:

- ``"tokenpose"`` (default, :class:`TokenPoseCodec`): official TokenPose (leeyegy/TokenPose ``lib/``). The crop
  maps the box with the isotropic factor ``(dst_w - 1) / (src_w - 1)`` about ``((dst_w - 1) / 2, (dst_h - 1) / 2)``;
  the heatmap frame is its own crop of the box (not the input frame divided by a stride); ground-truth boxes are
  measured with their last pixel (``x2 - x1 + 1``), detection boxes are not clipped; targets are untruncated
  Gaussians at the exact sub-pixel joint; the flip test averages without a shift; DARK blurs with zero padding.
- ``"hrnet"`` (:class:`HRNetCodec`): SimpleBaseline/HRNet's plain crop (``dst / src`` about ``dst / 2`` per axis),
  boxes of size ``x2 - x1``, Gaussians centred on the nearest pixel and cut at 3 sigma, HRNet's one-pixel flip
  shift, DARK with reflected borders.
- ``"udp"`` (:class:`UDPCodec`): unbiased data processing (Huang et al., CVPR 2020): ``(dst - 1) / src`` about
  ``(dst - 1) / 2`` per axis, sub-pixel Gaussians cut at 3 sigma, no flip shift, reflected DARK borders.

The three differ in their crop geometry (:meth:`Codec.grid`, one method per class) and in the flags below.

Shapes: ``B`` persons (crops), ``K`` keypoints, ``(h, w)`` heatmap rows x columns; coordinates in a grid's pixel
index units (the centre of pixel ``(row r, column c)`` is ``(x=c, y=r)``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence, TypeVar

import numpy as np
import torch

from dspose_graph.data.targets import TARGETS, gaussian_heatmaps
from dspose_graph.data.transforms import BOX_PADDING, box_to_center_scale, clip_box
from dspose_graph.eval.decode import BLUR_BORDERS, apply_matrices, decode_heatmaps, flip_back

ArrayLike = TypeVar("ArrayLike", torch.Tensor, np.ndarray)


@dataclass(frozen=True)
class Codec(ABC):
    """One consistent set of crop, target and decoding conventions (abstract: each subclass owns a crop geometry).

    Attributes:
        name: the key in :data:`CODECS`.
        box_last_pixel: ground-truth boxes measure ``x2 - x1 + 1`` pixels (TokenPose) instead of ``x2 - x1``.
        clip_detections: clip detector boxes to the image as ground-truth boxes are (TokenPose does not).
        target: ``"tokenpose"`` (sub-pixel, untruncated, TokenPose's in-bounds rule), ``"nearest"`` (HRNet:
            centred on the nearest pixel, cut at 3 sigma) or ``"subpixel"`` (DARK/UDP: sub-pixel, cut).
        flip_shift: shift mirrored heatmaps one pixel right in the flip test (HRNet's ``SHIFT_HEATMAP``).
        blur_border: DARK's modulation blur pads with ``"zero"`` (TokenPose) or ``"reflect"`` (OpenCV default).
    """

    name: str
    box_last_pixel: bool
    clip_detections: bool
    target: str
    flip_shift: bool
    blur_border: str

    def __post_init__(self) -> None:
        for field_name, value, valid in (("target", self.target, TARGETS), ("blur_border", self.blur_border, BLUR_BORDERS)):
            if value not in valid:
                raise ValueError(f"codec {self.name!r}: {field_name} must be one of {list(valid)}, got {value!r}")

    # --- geometry: image <-> crop ---------------------------------------------------------------------------

    @abstractmethod
    def grid(self, scale: Sequence[float], output_size: Sequence[int]) -> tuple[float, float, float, float]:
        """Scale factors ``(sx, sy)`` from box pixels to grid pixels and the grid point ``(ox, oy)`` the box centre
        maps to, for a box ``scale`` (w, h) and a grid ``output_size`` (w, h)."""

    def crop_affine(self, center: Sequence[float], scale: Sequence[float], rotation: float,
                    output_size: Sequence[int], inverse: bool = False) -> np.ndarray:
        """2x3 affine matrix image -> output grid (or output grid -> image with ``inverse=True``).

        A person box is ``center`` (x, y) and ``scale`` (w, h) in image pixels (already padded and set to the
        model's aspect ratio). The crop maps that box, rotated by ``rotation`` degrees about its centre, onto the
        grid of ``output_size`` (w, h): the box centre goes to the grid point of :meth:`grid`.
        """
        cx, cy = float(center[0]), float(center[1])
        if float(scale[0]) <= 0 or float(scale[1]) <= 0:
            raise ValueError(f"crop scale must be positive, got {tuple(scale)}")
        sx, sy, ox, oy = self.grid(scale, output_size)
        theta = np.deg2rad(rotation)
        cos, sin = np.cos(theta), np.sin(theta)
        # Forward: translate centre to origin, rotate by -rotation (image content turns by +rotation), scale, shift.
        lin = np.diag([sx, sy]) @ np.array([[cos, sin], [-sin, cos]])
        off = np.array([ox, oy]) - lin @ np.array([cx, cy])
        if inverse:
            inv_lin = np.linalg.inv(lin)
            lin, off = inv_lin, -inv_lin @ off
        return np.hstack([lin, off[:, None]]).astype(np.float64)

    def flip_matrix(self, output_size: Sequence[int]) -> np.ndarray:
        """3x3 mirror about the grid's vertical line through the box centre (:meth:`grid`'s ``ox``).

        Mirroring there equals HRNet's "flip the whole image, then crop about the flipped centre".
        """
        ox = self.grid((2.0, 2.0), output_size)[2]
        return np.array([[-1.0, 0.0, 2.0 * ox], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])

    def crop_matrix(self, center: Sequence[float], scale: Sequence[float], rotation: float,
                    output_size: Sequence[int], flip: bool = False) -> np.ndarray:
        """2x3 affine image -> output grid of a (possibly mirrored) crop.

        The crop is rotated first and mirrored second, so ``flip`` with ``rotation`` r equals HRNet's
        "mirror the image, then crop with rotation -r".
        """
        m = self.crop_affine(center, scale, rotation, output_size)
        if flip:
            m = (self.flip_matrix(output_size) @ np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
        return m

    def center_scale(self, box: Sequence[float], image_size: tuple[float, float] | None, aspect_ratio: float,
                     padding: float = BOX_PADDING, detection: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
        """Centre ``(2,)`` and padded scale ``(2,)`` of a person box ``[x, y, w, h]`` under this codec's box rule.

        The one home of the rule for datasets (ground-truth and detected boxes) and inference (user and detector
        boxes, ``detection=True``). A detection under a codec that does not clip detections (TokenPose's
        ``_xywh2cs``) is centred at ``x + (w - 1) / 2`` with size ``w``, unclipped; other boxes are clipped to the
        image (``image_size`` = (width, height); ``None`` = no clipping) and, with ``box_last_pixel``, grown by
        one pixel about the same centre (the box spans pixel edges). ``None`` when no box of positive area is left.
        """
        width, height = image_size if image_size is not None else (None, None)
        if detection and not self.clip_detections:
            x, y, w, h = (float(v) for v in box)
            edges = [x - 0.5, y - 0.5, w, h] if w > 0 and h > 0 else None
        else:
            edges = clip_box(box, width, height)
            if edges is not None and self.box_last_pixel:
                edges = [edges[0] - 0.5, edges[1] - 0.5, edges[2] + 1.0, edges[3] + 1.0]
        return None if edges is None else box_to_center_scale(edges, aspect_ratio, padding)

    def joints_to_heatmap(self, joints_input: np.ndarray, input_size: Sequence[int],
                          heatmap_size: Sequence[int]) -> np.ndarray:
        """Joints in input-crop pixels ``(..., 2)`` -> heatmap pixels.

        The map is the heatmap crop composed with the inverse input crop of the same box; it does not depend on
        the box. Plain: ``x * heatmap / input``; UDP: ``x * (heatmap - 1) / (input - 1)``; TokenPose: one factor
        ``(hw - 1) / (iw - 1)`` about the two grid centres (so not a pure stride when the aspect ratios round).
        """
        box = (float(input_size[0]) * 4.0, float(input_size[1]) * 4.0)
        to_input = self.crop_affine((0.0, 0.0), box, 0.0, input_size, inverse=True)
        to_heatmap = self.crop_affine((0.0, 0.0), box, 0.0, heatmap_size)
        m = to_heatmap[:, :2] @ to_input[:, :2]
        t = to_heatmap[:, :2] @ to_input[:, 2] + to_heatmap[:, 2]
        return np.asarray(joints_input, dtype=np.float64) @ m.T + t

    # --- targets ---------------------------------------------------------------------------------------------

    def encode(self, joints: np.ndarray, visible: np.ndarray, heatmap_size: Sequence[int], sigma: float,
               target: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian targets ``(..., K, h, w)`` and weights ``(..., K)`` of joints ``(..., K, 2)`` in heatmap pixels.

        ``target`` overrides the codec's encoding (a dataset's ``unbiased`` switch); see ``data.targets``.
        """
        return gaussian_heatmaps(joints, visible, heatmap_size, sigma, target=target or self.target)

    # --- decoding --------------------------------------------------------------------------------------------

    def flip_back(self, heatmaps: ArrayLike, flip_index: Sequence[int] | np.ndarray) -> ArrayLike:
        """Heatmaps of mirrored crops mapped back to the un-mirrored crops' frame, with this codec's flip shift."""
        return flip_back(heatmaps, flip_index, shift=self.flip_shift)

    def decode(self, heatmaps: ArrayLike, method: str = "dark", kernel: int = 11) -> tuple[ArrayLike, ArrayLike]:
        """Heatmap-pixel locations ``(B, K, 2)`` and scores ``(B, K)``; DARK blurs with this codec's border."""
        return decode_heatmaps(heatmaps, method=method, kernel=kernel, border=self.blur_border)

    def to_image(self, coords: ArrayLike, centers: ArrayLike, scales: ArrayLike, heatmap_size: Sequence[int],
                 rotations: ArrayLike | None = None) -> ArrayLike:
        """Heatmap-pixel coordinates ``(B, K, 2)`` -> original-image pixels ``(B, K, 2)``.

        ``centers``/``scales`` ``(B, 2)`` are the crop boxes (``scale`` = padded box size in pixels, as the
        datasets' ``meta`` gives them), ``heatmap_size`` is ``(w, h)``, ``rotations`` ``(B,)`` degrees (default 0).
        Inverts :meth:`crop_affine` exactly, so it undoes how the targets were placed.
        """
        ctr, scl = _numpy(centers, "centers"), _numpy(scales, "scales")
        b = ctr.shape[0]
        if ctr.shape != (b, 2) or scl.shape != (b, 2):
            raise ValueError(f"expected centers (B, 2) and scales (B, 2); got {ctr.shape}, {scl.shape}")
        rot = np.zeros(b) if rotations is None else _numpy(rotations, "rotations")
        if rot.shape != (b,):
            raise ValueError(f"rotations must be (B,) = ({b},), got {rot.shape}")
        mats = [self.crop_affine(ctr[i], scl[i], rot[i], heatmap_size, inverse=True) for i in range(b)]
        return apply_matrices(coords, np.stack(mats) if mats else np.zeros((0, 2, 3)))


def _numpy(x: torch.Tensor | np.ndarray | Sequence[float], name: str) -> np.ndarray:
    arr = x.detach().double().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


class TokenPoseCodec(Codec):
    """Official TokenPose's ``get_affine_transform``: one factor ``(dst_w - 1) / (src_w - 1)`` for both axes about
    ``((dst_w - 1) / 2, (dst_h - 1) / 2)``. Only the width sets the factor, so the heatmap frame is not the input
    frame divided by a stride."""

    def grid(self, scale: Sequence[float], output_size: Sequence[int]) -> tuple[float, float, float, float]:
        sw, ow, oh = float(scale[0]), float(output_size[0]), float(output_size[1])
        if sw <= 1.0:
            raise ValueError(f"crop scale width must exceed 1 px for the tokenpose codec, got {tuple(scale)}")
        s = (ow - 1.0) / (sw - 1.0)
        return s, s, (ow - 1.0) / 2.0, (oh - 1.0) / 2.0


class HRNetCodec(Codec):
    """SimpleBaseline/HRNet's plain crop: ``dst / src`` per axis, box centre at ``dst / 2``."""

    def grid(self, scale: Sequence[float], output_size: Sequence[int]) -> tuple[float, float, float, float]:
        ow, oh = float(output_size[0]), float(output_size[1])
        return ow / float(scale[0]), oh / float(scale[1]), ow / 2.0, oh / 2.0


class UDPCodec(Codec):
    """Unbiased data processing: ``(dst - 1) / src`` per axis, centre at ``(dst - 1) / 2`` (pixel centres are the
    sample points)."""

    def grid(self, scale: Sequence[float], output_size: Sequence[int]) -> tuple[float, float, float, float]:
        ow, oh = float(output_size[0]), float(output_size[1])
        return (ow - 1.0) / float(scale[0]), (oh - 1.0) / float(scale[1]), (ow - 1.0) / 2.0, (oh - 1.0) / 2.0


CODECS: dict[str, Codec] = {
    "tokenpose": TokenPoseCodec("tokenpose", box_last_pixel=True, clip_detections=False, target="tokenpose",
                                flip_shift=False, blur_border="zero"),
    "hrnet": HRNetCodec("hrnet", box_last_pixel=False, clip_detections=True, target="nearest", flip_shift=True,
                        blur_border="reflect"),
    "udp": UDPCodec("udp", box_last_pixel=False, clip_detections=True, target="subpixel", flip_shift=False,
                    blur_border="reflect"),
}
DEFAULT_CODEC = "tokenpose"


def get_codec(codec: str | Codec | None = None) -> Codec:
    """The :class:`Codec` named ``codec`` (default :data:`DEFAULT_CODEC`); a :class:`Codec` passes through."""
    if codec is None:
        return CODECS[DEFAULT_CODEC]
    if isinstance(codec, Codec):
        return codec
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; valid: {sorted(CODECS)}")
    return CODECS[codec]
