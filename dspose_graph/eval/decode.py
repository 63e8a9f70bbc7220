"""Heatmaps -> keypoint coordinates: argmax + quarter offset, DARK, flip test, back-projection.

Shapes: ``B`` persons (crops), ``K`` keypoints, ``h x w`` heatmap rows x columns.

Coordinates are in heatmap pixel-index units: the centre of pixel ``(row r, column c)`` is ``(x=c, y=r)``.
That is the frame in which ``crop_affine(..., output_size=heatmap_size)`` places a keypoint when the target
heatmap is drawn, so :func:`heatmaps_to_image` with the same ``center``/``scale`` inverts it exactly.

Every function takes a ``torch.Tensor`` or a ``numpy.ndarray`` and returns the same kind. The work is done
by whole-tensor torch operations over all ``B * K`` heatmaps at once (no per-joint Python loop).
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from dspose_graph.data.transforms import crop_affine

ArrayLike = TypeVar("ArrayLike", torch.Tensor, np.ndarray)

DECODERS = ("dark", "argmax")


def _as_tensor(x: torch.Tensor | np.ndarray, name: str, ndim: int) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.double()
    if torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN")
    return t


def _like(t: torch.Tensor, ref: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    return t if isinstance(ref, torch.Tensor) else t.cpu().numpy()


def gaussian_kernel_sigma(kernel: int) -> float:
    """The sigma OpenCV's ``GaussianBlur`` picks for a kernel size when given sigma 0 (as DARK does)."""
    return 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8


def gaussian_blur(heatmaps: torch.Tensor, kernel: int) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, K, h, w)`` heatmaps with reflect-101 borders (OpenCV's default)."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"DARK kernel must be a positive odd integer, got {kernel}")
    b, k, h, w = heatmaps.shape
    pad = kernel // 2
    if pad >= min(h, w):
        raise ValueError(f"DARK kernel {kernel} is too large for {h}x{w} heatmaps")
    sigma = gaussian_kernel_sigma(kernel)
    r = torch.arange(kernel, dtype=heatmaps.dtype, device=heatmaps.device) - pad
    g = torch.exp(-(r * r) / (2.0 * sigma * sigma))
    g = g / g.sum()
    x = heatmaps.reshape(b * k, 1, h, w)
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, kernel))
    x = F.conv2d(x, g.view(1, 1, kernel, 1))
    return x.view(b, k, h, w)


def argmax_coords(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer location ``(B, K, 2)`` (x, y) of each heatmap's maximum, and the maximum ``(B, K)``.

    Ties go to the first maximum in row-major order (as ``numpy.argmax``).
    """
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, h * w)
    maxvals, idx = flat.max(dim=2)
    coords = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=2)
    return coords, maxvals


def _gather(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``maps[b, k, y[b, k], x[b, k]]`` for ``(B, K, h, w)`` maps and ``(B, K)`` integer indices (clamped)."""
    b, k, h, w = maps.shape
    xi = x.clamp(0, w - 1)
    yi = y.clamp(0, h - 1)
    return maps.reshape(b, k, h * w).gather(2, (yi * w + xi).unsqueeze(2)).squeeze(2)


def quarter_offset(heatmaps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Move each integer maximum a quarter pixel towards its higher neighbour (Newell et al. / HRNet).

    Applied only where both neighbours exist (``0 < x < w - 1``, ``0 < y < h - 1``, per axis).
    """
    h, w = heatmaps.shape[-2:]
    x, y = coords[..., 0], coords[..., 1]
    dx = _gather(heatmaps, x + 1, y) - _gather(heatmaps, x - 1, y)
    dy = _gather(heatmaps, x, y + 1) - _gather(heatmaps, x, y - 1)
    ok_x = (x > 0) & (x < w - 1)
    ok_y = (y > 0) & (y < h - 1)
    out = coords.to(heatmaps.dtype).clone()
    out[..., 0] += torch.where(ok_x, 0.25 * torch.sign(dx), torch.zeros_like(dx))
    out[..., 1] += torch.where(ok_y, 0.25 * torch.sign(dy), torch.zeros_like(dy))
    return out


def dark_refine(heatmaps: torch.Tensor, coords: torch.Tensor, kernel: int = 11, eps: float = 1e-10) -> torch.Tensor:
    """Distribution-aware refinement (DARK, Zhang et al., CVPR 2020) of integer maxima ``coords`` (B, K, 2).

    1. Modulate: blur each heatmap with a ``kernel`` x ``kernel`` Gaussian and rescale it to its original
       maximum (the network output is not a clean Gaussian; the blur restores one).
    2. Take ``log`` (clipped at ``eps``): a Gaussian becomes a quadratic, which a second-order Taylor
       expansion fits exactly.
    3. At the maximum ``m``, with gradient ``g`` (central differences) and Hessian ``H`` (central differences
       with step 2, as in the paper's code), the sub-pixel maximum is ``m - H^{-1} g``.

    The refinement is applied where the 5x5 stencil fits inside the map (``1 < x < w - 2``,
    ``1 < y < h - 2``) and ``det H != 0``; elsewhere the integer location is kept.
    """
    b, k, h, w = heatmaps.shape
    peak = heatmaps.reshape(b, k, -1).amax(dim=2, keepdim=True).unsqueeze(3)
    blurred = gaussian_blur(heatmaps, kernel)
    bpeak = blurred.reshape(b, k, -1).amax(dim=2, keepdim=True).unsqueeze(3)
    # An all-zero map has blurred max 0: leave it at zero rather than divide by zero.
    scale = torch.where(bpeak > 0, peak / bpeak.clamp_min(torch.finfo(heatmaps.dtype).tiny), torch.ones_like(peak))
    logm = torch.log(torch.clamp(blurred * scale, min=eps))

    x, y = coords[..., 0], coords[..., 1]

    def at(ddx: int, ddy: int) -> torch.Tensor:
        return _gather(logm, x + ddx, y + ddy)

    c = at(0, 0)
    gx = 0.5 * (at(1, 0) - at(-1, 0))
    gy = 0.5 * (at(0, 1) - at(0, -1))
    hxx = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    hyy = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = hxx * hyy - hxy * hxy
    inside = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2)
    ok = inside & (det != 0)
    safe_det = torch.where(ok, det, torch.ones_like(det))
    # -H^{-1} g with the closed-form inverse of a symmetric 2x2 matrix.
    ox = -(hyy * gx - hxy * gy) / safe_det
    oy = -(-hxy * gx + hxx * gy) / safe_det
    out = coords.to(heatmaps.dtype).clone()
    out[..., 0] += torch.where(ok, ox, torch.zeros_like(ox))
    out[..., 1] += torch.where(ok, oy, torch.zeros_like(oy))
    return out


def decode_heatmaps(heatmaps: ArrayLike, method: str = "dark", kernel: int = 11) -> tuple[ArrayLike, ArrayLike]:
    """Keypoint locations ``(B, K, 2)`` in heatmap pixels and confidences ``(B, K)`` from ``(B, K, h, w)`` maps.

    ``method``: ``"dark"`` (Taylor refinement on the modulated log-heatmap) or ``"argmax"`` (integer maximum
    plus the quarter-pixel offset). The confidence is the heatmap maximum. A map whose maximum is not positive
    carries no location: its coordinates are returned as ``(0, 0)`` with its (non-positive) score, as HRNet does.
    Computation is in float64; outputs are float64 of the input's kind (tensor on the input's device, or numpy).
    """
    if method not in DECODERS:
        raise ValueError(f"unknown decoding method {method!r}; valid: {list(DECODERS)}")
    hm = _as_tensor(heatmaps, "heatmaps", 4).double()
    if hm.shape[-1] < 1 or hm.shape[-2] < 1:
        raise ValueError(f"heatmaps have an empty spatial size: {tuple(hm.shape)}")
    coords_int, maxvals = argmax_coords(hm)
    if method == "dark":
        coords = dark_refine(hm, coords_int, kernel=kernel)
    else:
        coords = quarter_offset(hm, coords_int)
    coords = coords * (maxvals > 0).unsqueeze(2).to(coords.dtype)
    return _like(coords, heatmaps), _like(maxvals, heatmaps)


def flip_back(heatmaps: ArrayLike, flip_index: Sequence[int] | np.ndarray, shift: bool = True) -> ArrayLike:
    """Heatmaps predicted on horizontally flipped crops, mapped back to the un-flipped crop's frame.

    Mirrors the width axis and swaps left/right channels (``out[:, k] = flipped[:, flip_index[k]]``; use
    ``schema.flip_index``). ``shift=True`` moves the result one pixel right (HRNet's flip-test shift), which
    compensates the half-pixel misalignment of the non-UDP crop convention; use ``shift=False`` with UDP.
    """
    hm = heatmaps if isinstance(heatmaps, torch.Tensor) else torch.from_numpy(np.asarray(heatmaps))
    if hm.dim() != 4:
        raise ValueError(f"heatmaps must be (B, K, h, w), got shape {tuple(hm.shape)}")
    perm = torch.as_tensor(np.asarray(flip_index), dtype=torch.long, device=hm.device)
    k = hm.shape[1]
    if perm.shape != (k,) or sorted(perm.tolist()) != list(range(k)):
        raise ValueError(f"flip_index must be a permutation of range({k}), got {perm.tolist()}")
    out = hm.flip(3)[:, perm]
    if shift:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=3)
    out = out.contiguous()
    return out if isinstance(heatmaps, torch.Tensor) else out.numpy()


def heatmaps_to_image(
    coords: ArrayLike,
    centers: ArrayLike,
    scales: ArrayLike,
    heatmap_size: Sequence[int],
    udp: bool = False,
    rotations: ArrayLike | None = None,
) -> ArrayLike:
    """Heatmap-pixel coordinates ``(B, K, 2)`` -> original-image pixels ``(B, K, 2)``.

    ``centers``/``scales`` ``(B, 2)`` are the crop boxes (``scale`` = padded box size in pixels, as the
    datasets' ``meta`` gives them), ``heatmap_size`` is ``(w, h)``, ``rotations`` ``(B,)`` degrees (default 0).
    Uses ``crop_affine(..., inverse=True)``, so it inverts exactly how targets were placed.
    """
    c = _as_tensor(coords, "coords", 3).double()
    ctr = _as_tensor(centers, "centers", 2).double().cpu().numpy()
    scl = _as_tensor(scales, "scales", 2).double().cpu().numpy()
    b = c.shape[0]
    if c.shape[2] != 2 or ctr.shape != (b, 2) or scl.shape != (b, 2):
        raise ValueError(
            f"expected coords (B, K, 2), centers (B, 2), scales (B, 2); got {tuple(c.shape)}, {ctr.shape}, {scl.shape}"
        )
    rot = np.zeros(b) if rotations is None else _as_tensor(rotations, "rotations", 1).double().cpu().numpy()
    if rot.shape != (b,):
        raise ValueError(f"rotations must be (B,) = ({b},), got {rot.shape}")
    mats = np.stack([crop_affine(ctr[i], scl[i], rot[i], heatmap_size, inverse=True, udp=udp) for i in range(b)])
    m = torch.from_numpy(mats).to(c.device)
    out = torch.einsum("bij,bkj->bki", m[:, :, :2], c) + m[:, None, :, 2]
    return _like(out, coords)
