"""Heatmaps -> keypoint coordinates: argmax + quarter offset, DARK, the flip-test mapping, back-projection.

Shapes: ``B`` persons (crops), ``K`` keypoints, ``h x w`` heatmap rows x columns.

Coordinates are in heatmap pixel-index units: the centre of pixel ``(row r, column c)`` is ``(x=c, y=r)``.
That is the frame in which a codec's ``crop_affine(..., output_size=heatmap_size)`` places a keypoint when the
target heatmap is drawn, so the codec's inverse crop (:func:`apply_matrices`) maps it back exactly.

Every function takes a ``torch.Tensor`` or a ``numpy.ndarray`` and returns the same kind. The work is done
by whole-tensor torch operations over all ``B * K`` heatmaps at once (no per-joint Python loop).

These are the primitives; which border DARK blurs with and whether the flip test shifts is a codec's choice
(``dspose_graph.data.codec``: ``Codec.decode``, ``Codec.flip_back`` and ``Codec.to_image`` call these with it).
Borders default to OpenCV's reflect-101, as ``cv2.GaussianBlur`` does.
"""

from __future__ import annotations

import functools
from typing import Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F


ArrayLike = TypeVar("ArrayLike", torch.Tensor, np.ndarray)

DECODERS = ("dark", "argmax")
BLUR_BORDERS = ("zero", "reflect")


def _as_tensor(x: torch.Tensor | np.ndarray, name: str, ndim: int, check_nan: bool = True) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    t = t.detach()
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.double()
    if check_nan and torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN")
    return t


def _like(t: torch.Tensor, ref: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    return t if isinstance(ref, torch.Tensor) else t.cpu().numpy()


def gaussian_kernel_sigma(kernel: int) -> float:
    """The sigma OpenCV's ``GaussianBlur`` picks for a kernel size when given sigma 0 (as DARK does)."""
    return 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8


def _check_border(border: str) -> None:
    if border not in BLUR_BORDERS:
        raise ValueError(f"unknown DARK blur border {border!r}; valid: {list(BLUR_BORDERS)}")


def gaussian_blur(heatmaps: torch.Tensor, kernel: int, border: str = "reflect") -> torch.Tensor:
    """Separable Gaussian blur of ``(B, K, h, w)`` heatmaps.

    ``border="reflect"``: reflect-101 (OpenCV's default); ``"zero"``: zero padding (TokenPose's DARK).
    """
    _check_border(border)
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"DARK kernel must be a positive odd integer, got {kernel}")
    b, k, h, w = heatmaps.shape
    pad = kernel // 2
    if pad >= min(h, w):
        raise ValueError(f"DARK kernel {kernel} is too large for {h}x{w} heatmaps")
    g = _gaussian_1d(kernel, heatmaps.dtype, heatmaps.device)
    x = heatmaps.reshape(b * k, 1, h, w)
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect" if border == "reflect" else "constant")
    x = F.conv2d(x, g.view(1, 1, 1, kernel))
    x = F.conv2d(x, g.view(1, 1, kernel, 1))
    return x.view(b, k, h, w)


def argmax_coords(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer location ``(B, K, 2)`` (x, y) of each heatmap's maximum, and the maximum ``(B, K)``.

    Ties go to the first maximum in row-major order; a map containing NaN reports NaN as its maximum.
    """
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, h * w)
    if flat.device.type == "cpu":
        # numpy's argmax is several times faster than torch's on CPU (same first-maximum rule); zero-copy.
        idx = torch.from_numpy(flat.numpy().argmax(axis=2))
    else:
        idx = flat.argmax(dim=2)
    maxvals = flat.gather(2, idx.unsqueeze(2)).squeeze(2)
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
    dx, dy = dx.double(), dy.double()
    out = coords.to(torch.float64).clone()
    out[..., 0] += torch.where(ok_x, 0.25 * torch.sign(dx), torch.zeros_like(dx))
    out[..., 1] += torch.where(ok_y, 0.25 * torch.sign(dy), torch.zeros_like(dy))
    return out


def _gaussian_1d(kernel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    sigma = gaussian_kernel_sigma(kernel)
    r = torch.arange(kernel, dtype=dtype, device=device) - kernel // 2
    g = torch.exp(-(r * r) / (2.0 * sigma * sigma))
    return g / g.sum()


def _taylor_step(logm: torch.Tensor, x: torch.Tensor, y: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel offset ``-H^{-1} g`` from a 5x5 log-map ``logm (..., 5, 5)`` centred on the maximum."""
    c = logm[..., 2, 2]
    gx = 0.5 * (logm[..., 2, 3] - logm[..., 2, 1])
    gy = 0.5 * (logm[..., 3, 2] - logm[..., 1, 2])
    hxx = 0.25 * (logm[..., 2, 4] - 2 * c + logm[..., 2, 0])
    hyy = 0.25 * (logm[..., 4, 2] - 2 * c + logm[..., 0, 2])
    hxy = 0.25 * (logm[..., 3, 3] - logm[..., 1, 3] - logm[..., 3, 1] + logm[..., 1, 1])
    det = hxx * hyy - hxy * hxy
    ok = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2) & (det != 0)
    safe_det = torch.where(ok, det, torch.ones_like(det))
    # Closed-form inverse of the symmetric 2x2 Hessian.
    ox = -(hyy * gx - hxy * gy) / safe_det
    oy = -(hxx * gy - hxy * gx) / safe_det
    zero = torch.zeros_like(ox)
    return torch.where(ok, ox, zero), torch.where(ok, oy, zero)


def _reflect101(i: torch.Tensor, n: int) -> torch.Tensor:
    """OpenCV's default border: index -1 -> 1, n -> n - 2 (valid while the overshoot is < n)."""
    i = torch.where(i < 0, -i, i)
    i = torch.where(i > n - 1, 2 * (n - 1) - i, i)
    return i.clamp(0, n - 1)


def _window_5x5(heatmaps: torch.Tensor, x: torch.Tensor, y: torch.Tensor, kernel: int,
                border: str = "reflect") -> torch.Tensor:
    """The Gaussian-blurred map on the 5x5 grid around ``(x, y)``, computed from a local window only.

    Equal to ``gaussian_blur(heatmaps)`` at those 25 points, at a tiny fraction of the cost: the blur is a
    ``(5, P) x (P, P) x (P, 5)`` product on the ``P = kernel + 4`` window around each maximum.
    """
    b, k, h, w = heatmaps.shape
    half = kernel // 2 + 2
    r = torch.arange(-half, half + 1, device=heatmaps.device)
    rows, cols = y.reshape(-1, 1) + r, x.reshape(-1, 1) + r
    if border == "reflect":
        rows, cols = _reflect101(rows, h), _reflect101(cols, w)
        inside = None
    else:
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    idx = (rows[:, :, None] * w + cols[:, None, :]).reshape(b * k, -1)
    patch = heatmaps.reshape(b * k, h * w).gather(1, idx).double().view(b * k, r.numel(), r.numel())
    if inside is not None:
        patch = patch * inside
    band = _band(kernel, str(heatmaps.device))
    return (band @ patch @ band.T).view(b, k, 5, 5)


@functools.lru_cache(maxsize=16)
def _band(kernel: int, device: str) -> torch.Tensor:
    """``(5, kernel + 4)`` matrix whose row ``o`` is the 1-D Gaussian shifted by ``o``: a 5-output blur."""
    g = _gaussian_1d(kernel, torch.float64, torch.device(device))
    band = torch.zeros(5, kernel + 4, dtype=torch.float64, device=device)
    for o in range(5):
        band[o, o:o + kernel] = g
    return band


def dark_refine(heatmaps: torch.Tensor, coords: torch.Tensor, kernel: int = 11, eps: float = 1e-10,
                border: str = "reflect") -> torch.Tensor:
    """Distribution-aware refinement (DARK, Zhang et al., CVPR 2020) of integer maxima ``coords`` (B, K, 2).

    1. Modulate: blur each heatmap with a ``kernel`` x ``kernel`` Gaussian (OpenCV's sigma rule for that size,
       ``border`` ``"reflect"`` (reflect-101) or ``"zero"`` padding) and rescale it to its original maximum (the network output is not a clean
       Gaussian; the blur restores one).
    2. Take ``log`` (clipped at ``eps``): a Gaussian becomes a quadratic, which a second-order Taylor
       expansion fits exactly.
    3. At the maximum ``m``, with gradient ``g`` (central differences) and Hessian ``H`` (central differences
       with step 2, as in the paper's code), the sub-pixel maximum is ``m - H^{-1} g``.

    The refinement is applied where the 5x5 stencil fits inside the map (``1 < x < w - 2``,
    ``1 < y < h - 2``) and ``det H != 0``; elsewhere the integer location is kept.

    Only the 5x5 neighbourhood of each maximum enters the Taylor step, and the rescaling is a constant
    added to the log (it cancels in every difference), so the blur is evaluated on local windows. Maps
    where clipping at ``eps`` could matter (a blurred stencil value below ``eps``) take the exact path
    through the full blurred map.
    """
    b, k, h, w = heatmaps.shape
    _check_border(border)
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"DARK kernel must be a positive odd integer, got {kernel}")
    if kernel // 2 + 2 >= min(h, w):
        raise ValueError(f"DARK kernel {kernel} is too large for {h}x{w} heatmaps; pass a smaller odd kernel "
                         f"(at most {2 * (min(h, w) - 3) + 1}) or method='argmax'")
    x, y = coords[..., 0], coords[..., 1]
    local = _window_5x5(heatmaps, x, y, kernel, border)
    # The blurred maximum never exceeds the original one, so the rescale factor is >= 1: a stencil value
    # >= eps before rescaling is never clipped.
    # A map without a positive maximum carries no location (decode_heatmaps zeroes it) and an all-zero one
    # has no gradient either way: only positive maps take the exact path.
    clipped = (local < eps).flatten(2).any(dim=2) & (_gather(heatmaps, x, y) > 0)
    logm = torch.log(local.clamp_min(eps))
    if clipped.any():
        sel = clipped.nonzero(as_tuple=True)
        logm[sel] = _full_log_window(heatmaps[sel[0], sel[1]].double().unsqueeze(0), x[sel], y[sel], kernel, eps,
                                     border)[0]
    ox, oy = _taylor_step(logm, x, y, h, w)
    out = coords.to(torch.float64).clone()
    out[..., 0] += ox
    out[..., 1] += oy
    return out


def _full_log_window(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor, kernel: int, eps: float,
                     border: str) -> torch.Tensor:
    """Exact DARK log-map (full blur, rescale to the original maximum, clip) on the 5x5 grid: ``(1, M, 5, 5)``."""
    peak = maps.flatten(2).amax(dim=2)[..., None, None]
    blurred = gaussian_blur(maps, kernel, border)
    bpeak = blurred.flatten(2).amax(dim=2)[..., None, None]
    scale = torch.where(bpeak != 0, peak / torch.where(bpeak != 0, bpeak, torch.ones_like(bpeak)), torch.ones_like(peak))
    logm = torch.log(torch.clamp(blurred * scale, min=eps))
    r = torch.arange(-2, 3, device=maps.device)
    h, w = maps.shape[-2:]
    rows = (y.reshape(-1, 1) + r).clamp(0, h - 1)
    cols = (x.reshape(-1, 1) + r).clamp(0, w - 1)
    idx = (rows[:, :, None] * w + cols[:, None, :]).reshape(1, -1, 25)
    return logm.flatten(2).gather(2, idx).view(1, -1, 5, 5)


def dark_reference(heatmaps: np.ndarray, kernel: int = 11, border: str = "reflect") -> np.ndarray:
    """DARK written the usual way, one heatmap at a time (``cv2.GaussianBlur``, log, Taylor step with an
    explicit 2x2 inverse): the readable specification that the tests and ``dspose bench dark`` hold
    :func:`dark_refine` to. ``border="zero"`` embeds each map in a zero frame of half a kernel before the
    blur, as TokenPose does. Slow; ``(B, K, h, w)`` in, ``(B, K, 2)`` x/y out (0 where a map is <= 0)."""
    import cv2

    _check_border(border)
    pad = kernel // 2
    b, k, h, w = heatmaps.shape
    out = np.zeros((b, k, 2))
    sigma = gaussian_kernel_sigma(kernel)
    for i in range(b):
        for j in range(k):
            m = heatmaps[i, j].astype(np.float64)
            y, x = np.unravel_index(np.argmax(m), m.shape)
            if m[y, x] <= 0:
                continue
            if border == "zero":
                framed = cv2.copyMakeBorder(m, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0.0)
                blurred = cv2.GaussianBlur(framed, (kernel, kernel), sigma)[pad:pad + h, pad:pad + w]
            else:
                blurred = cv2.GaussianBlur(m, (kernel, kernel), sigma)
            blurred *= m.max() / blurred.max()
            lg = np.log(np.maximum(blurred, 1e-10))
            p = np.array([x, y], dtype=np.float64)
            if 1 < x < w - 2 and 1 < y < h - 2:
                g = np.array([0.5 * (lg[y, x + 1] - lg[y, x - 1]), 0.5 * (lg[y + 1, x] - lg[y - 1, x])])
                dxx = 0.25 * (lg[y, x + 2] - 2 * lg[y, x] + lg[y, x - 2])
                dyy = 0.25 * (lg[y + 2, x] - 2 * lg[y, x] + lg[y - 2, x])
                dxy = 0.25 * (lg[y + 1, x + 1] - lg[y - 1, x + 1] - lg[y + 1, x - 1] + lg[y - 1, x - 1])
                hess = np.array([[dxx, dxy], [dxy, dyy]])
                if np.linalg.det(hess) != 0:
                    p = p - np.linalg.inv(hess) @ g
            out[i, j] = p
    return out


def decode_heatmaps(
    heatmaps: ArrayLike,
    method: str = "dark",
    kernel: int = 11,
    border: str = "reflect",
) -> tuple[ArrayLike, ArrayLike]:
    """Keypoint locations ``(B, K, 2)`` in heatmap pixels and confidences ``(B, K)`` from ``(B, K, h, w)`` maps.

    ``method``: ``"dark"`` (Taylor refinement on the modulated log-heatmap, blurred with ``border`` padding:
    ``"reflect"`` (reflect-101) or ``"zero"``) or ``"argmax"`` (integer maximum plus the quarter-pixel offset). The confidence is the heatmap maximum. A map whose maximum is not positive
    carries no location: its coordinates are returned as ``(0, 0)`` with its (non-positive) score, as HRNet does.
    The maximum is found in the input's dtype; the refinement runs in float64. Outputs are float64 of the
    input's kind (tensor on the input's device, or numpy).
    """
    if method not in DECODERS:
        raise ValueError(f"unknown decoding method {method!r}; valid: {list(DECODERS)}")
    hm = _as_tensor(heatmaps, "heatmaps", 4, check_nan=False)
    if hm.shape[-1] < 1 or hm.shape[-2] < 1:
        raise ValueError(f"heatmaps have an empty spatial size: {tuple(hm.shape)}")
    coords_int, maxvals = argmax_coords(hm)
    maxvals = maxvals.double()
    # argmax lands on a NaN wherever a map holds one, so checking the B*K maxima finds every NaN map.
    if not torch.isfinite(maxvals).all():
        bad = (~torch.isfinite(maxvals)).nonzero()[0].tolist()
        raise ValueError(f"heatmaps contain NaN/inf (first in sample {bad[0]}, keypoint {bad[1]})")
    if method == "dark":
        coords = dark_refine(hm, coords_int, kernel=kernel, border=border)
    else:
        coords = quarter_offset(hm, coords_int)
    coords = coords * (maxvals > 0).unsqueeze(2).to(coords.dtype)
    return _like(coords, heatmaps), _like(maxvals, heatmaps)


def flip_back(
    heatmaps: ArrayLike,
    flip_index: Sequence[int] | np.ndarray,
    shift: bool,
) -> ArrayLike:
    """Heatmaps predicted on horizontally flipped crops, mapped back to the un-flipped crop's frame.

    Mirrors the width axis and swaps left/right channels (``out[:, k] = flipped[:, flip_index[k]]``; use
    ``schema.flip_index``). ``shift=True`` moves the result one pixel right (HRNet's flip-test shift), which
    compensates the half-pixel misalignment of the plain (HRNet) crop convention; TokenPose and UDP crops
    mirror exactly and need none: ``Codec.flip_back`` passes its codec's choice.
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


def apply_matrices(coords: ArrayLike, matrices: np.ndarray) -> ArrayLike:
    """Per-person 2x3 affine ``matrices`` ``(B, 2, 3)`` applied to coordinates ``(B, K, 2)``, in float64.

    The back-projection of decoded heatmap coordinates (a codec's inverse crops); returns the input's kind
    (a tensor on its device, or numpy).
    """
    c = _as_tensor(coords, "coords", 3).double()
    if c.shape[2] != 2 or matrices.shape != (c.shape[0], 2, 3):
        raise ValueError(f"expected coords (B, K, 2) and one crop (centers, scales) per person; got coords "
                         f"{tuple(c.shape)} for {matrices.shape[0]} crop(s)")
    m = torch.from_numpy(np.asarray(matrices, dtype=np.float64)).to(c.device)
    out = torch.einsum("bij,bkj->bki", m[:, :, :2], c) + m[:, None, :, 2]
    return _like(out, coords)
