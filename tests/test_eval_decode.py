"""Heatmap decoding: batched DARK == per-joint reference, flip test, back-projection round trips on real keypoints."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from dspose_graph.data.codec import CODECS, get_codec
from dspose_graph.data.transforms import apply_affine, box_to_center_scale
from dspose_graph.data.coco import load_coco
from dspose_graph.eval.decode import dark_reference, decode_heatmaps, flip_back, gaussian_blur, gaussian_kernel_sigma
from topology.schemas import COCO17

HM_W, HM_H = 48, 64


def render(points: np.ndarray, size=(HM_W, HM_H), sigma: float = 2.0) -> np.ndarray:
    """Gaussian heatmaps (B, K, h, w) centred at ``points (B, K, 2)`` in heatmap pixel-index coordinates."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w]
    d2 = (xs[None, None] - points[..., 0, None, None]) ** 2 + (ys[None, None] - points[..., 1, None, None]) ** 2
    return np.exp(-d2 / (2 * sigma**2))


def argmax_reference(hm: np.ndarray) -> np.ndarray:
    b, k, h, w = hm.shape
    out = np.zeros((b, k, 2))
    for i in range(b):
        for j in range(k):
            m = hm[i, j]
            y, x = np.unravel_index(np.argmax(m), m.shape)
            if m[y, x] <= 0:
                continue
            px, py = float(x), float(y)
            if 0 < x < w - 1:
                px += 0.25 * np.sign(m[y, x + 1] - m[y, x - 1])
            if 0 < y < h - 1:
                py += 0.25 * np.sign(m[y + 1, x] - m[y - 1, x])
            out[i, j] = px, py
    return out


@pytest.fixture(scope="module")
def noisy_heatmaps() -> np.ndarray:
    """Network-like heatmaps: off-grid Gaussians of varying width and height plus noise, some at the border."""
    rng = np.random.default_rng(0)
    pts = rng.uniform([-1, -1], [HM_W, HM_H], size=(6, 17, 2))
    pts[0, :4] = [[0, 0], [HM_W - 1, 5], [1.2, HM_H - 1.6], [HM_W - 2.3, HM_H - 2.1]]
    hm = render(pts, sigma=2.0) * rng.uniform(0.3, 1.0, size=(6, 17, 1, 1))
    hm += rng.normal(0, 0.02, size=hm.shape)
    hm[1, 3] = 0.0  # an empty map
    return hm


CODEC_BORDERS = [("tokenpose", "zero"), ("hrnet", "reflect")]


@pytest.mark.parametrize("codec,border", CODEC_BORDERS)
@pytest.mark.parametrize("kernel", [11, 7])
def test_dark_batched_equals_per_joint_reference(noisy_heatmaps, kernel, codec, border):
    coords, scores = CODECS[codec].decode(noisy_heatmaps, "dark", kernel=kernel)
    ref = dark_reference(noisy_heatmaps, kernel, border=border)
    assert coords.shape == (6, 17, 2) and scores.shape == (6, 17)
    np.testing.assert_allclose(coords, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores, noisy_heatmaps.reshape(6, 17, -1).max(axis=2))
    assert np.abs(coords - np.round(coords)).max() > 0.1  # the refinement did move points


@pytest.mark.parametrize("codec,border", CODEC_BORDERS)
def test_dark_tiny_maps_take_the_exact_clipped_path(codec, border):
    """Blurred values below the log clip (1e-10): the local-window shortcut must defer to the full blur."""
    rng = np.random.default_rng(2)
    pts = rng.uniform([3, 3], [HM_W - 4, HM_H - 4], size=(2, 5, 2))
    hm = render(pts) * np.array([1e-13, 1e-11, 1e-9, 1.0, 1e-12])[None, :, None, None]
    hm[0, 0] += rng.uniform(0, 1e-14, size=(HM_H, HM_W))
    np.testing.assert_allclose(CODECS[codec].decode(hm)[0], dark_reference(hm, border=border), atol=1e-4, rtol=0)


@pytest.mark.parametrize("codec,border", CODEC_BORDERS)
def test_dark_on_small_heatmaps(codec, border):
    """The largest kernel a small map allows still matches the reference; a larger one is refused clearly."""
    rng = np.random.default_rng(4)
    pts = rng.uniform([1, 1], [7, 9], size=(3, 4, 2))
    hm = render(pts, size=(8, 10), sigma=1.0) + rng.uniform(0, 0.01, size=(3, 4, 10, 8))
    np.testing.assert_allclose(CODECS[codec].decode(hm, kernel=11)[0], dark_reference(hm, 11, border),
                               atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="at most 7"):
        decode_heatmaps(hm[..., :6, :6])
    small = hm[..., :6, :6]
    np.testing.assert_allclose(CODECS[codec].decode(small, kernel=7)[0], dark_reference(small, 7, border),
                               atol=1e-4, rtol=0)


def test_gaussian_blur_equals_opencv(noisy_heatmaps):
    ours = gaussian_blur(torch.from_numpy(noisy_heatmaps), 11).numpy()
    ref = np.stack([[cv2.GaussianBlur(m, (11, 11), 0) for m in maps] for maps in noisy_heatmaps])
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    # TokenPose's blur: the map inside a zero frame of half a kernel, blurred, cut back out.
    zero = gaussian_blur(torch.from_numpy(noisy_heatmaps), 11, border="zero").numpy()
    framed = np.pad(noisy_heatmaps, ((0, 0), (0, 0), (5, 5), (5, 5)))
    ref = np.stack([[cv2.GaussianBlur(m, (11, 11), 0)[5:-5, 5:-5] for m in maps] for maps in framed])
    np.testing.assert_allclose(zero, ref, atol=1e-12)
    assert np.abs(zero - ours)[..., :5, :].max() > 1e-3  # the borders do differ
    with pytest.raises(ValueError, match="border"):
        gaussian_blur(torch.from_numpy(noisy_heatmaps), 11, border="wrap")


def test_dark_torch_float32_matches_numpy(noisy_heatmaps):
    c_np, s_np = decode_heatmaps(noisy_heatmaps)
    c_t, s_t = decode_heatmaps(torch.from_numpy(noisy_heatmaps).float())
    assert isinstance(c_t, torch.Tensor) and isinstance(s_t, torch.Tensor)
    np.testing.assert_allclose(c_t.numpy(), c_np, atol=1e-3)


def test_argmax_quarter_offset_equals_reference(noisy_heatmaps):
    coords, _ = decode_heatmaps(noisy_heatmaps, "argmax")
    np.testing.assert_array_equal(coords, argmax_reference(noisy_heatmaps))


def test_dark_recovers_subpixel_centre_better_than_argmax():
    rng = np.random.default_rng(1)
    pts = rng.uniform([7, 7], [HM_W - 8, HM_H - 8], size=(8, 17, 2))
    hm = render(pts)
    dark, _ = decode_heatmaps(hm, "dark")
    arg, _ = decode_heatmaps(hm, "argmax")
    dark_err = np.linalg.norm(dark - pts, axis=2)
    assert dark_err.max() < 0.05
    assert dark_err.mean() < 0.5 * np.linalg.norm(arg - pts, axis=2).mean()


def test_empty_and_border_maps():
    hm = np.zeros((1, 3, HM_H, HM_W))
    hm[0, 1, 0, 0] = 1.0
    hm[0, 2, HM_H - 1, 7] = 1.0
    coords, scores = decode_heatmaps(hm)
    np.testing.assert_array_equal(coords[0], [[0, 0], [0, 0], [7, HM_H - 1]])
    np.testing.assert_array_equal(scores[0], [0, 1, 1])


def test_opencv_sigma_rule():
    # DARK blurs with cv2.GaussianBlur(kernel=11, sigma=0); OpenCV then derives sigma from the size.
    # (For sizes <= 9 OpenCV uses fixed tables instead; we always use the formula and say so in the docs.)
    for k in (11, 13, 15):
        sigma = gaussian_kernel_sigma(k)
        ours = np.exp(-((np.arange(k) - k // 2) ** 2) / (2 * sigma**2))
        np.testing.assert_allclose(ours / ours.sum(), cv2.getGaussianKernel(k, 0).ravel(), atol=1e-7)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((17, 64, 48)), "4 dimensions"),
        (np.full((1, 2, 64, 48), np.nan), "NaN"),
    ],
)
def test_decode_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        decode_heatmaps(bad)


def test_decode_rejects_bad_options():
    with pytest.raises(ValueError, match="valid: \\['dark', 'argmax'\\]"):
        decode_heatmaps(np.zeros((1, 1, 8, 8)), method="soft")
    with pytest.raises(ValueError, match="odd"):
        decode_heatmaps(np.ones((1, 1, 16, 16)), kernel=4)


# --- flip test -------------------------------------------------------------------------------------------

def test_flip_back_twice_is_identity_and_symmetric_map_is_fixed(noisy_heatmaps):
    idx = COCO17.flip_index
    hm = torch.from_numpy(noisy_heatmaps)
    twice = flip_back(flip_back(hm, idx, shift=False), idx, shift=False)
    assert torch.equal(twice, hm)
    # A left/right-symmetric pose: each left joint mirrors its right partner, centre joints on the axis.
    pts = np.zeros((1, 17, 2))
    pts[0, :, 1] = np.arange(17) * 3 + 5
    pts[0, 0, 0] = (HM_W - 1) / 2
    for left, right in COCO17.flip_pairs:
        pts[0, left] = [10.3, pts[0, left, 1]]
        pts[0, right] = [HM_W - 1 - 10.3, pts[0, left, 1]]
    pts[0, [1, 3, 5, 7, 9, 11, 13, 15], 1] = pts[0, [2, 4, 6, 8, 10, 12, 14, 16], 1]
    sym = render(pts)
    np.testing.assert_allclose(flip_back(sym, idx, shift=False), sym, atol=1e-12)


def test_flip_back_of_flipped_crop_aligns_with_original(synthetic_coco):
    """COCO-format keypoints: heatmaps of the mirrored crop, mapped back, decode to the original keypoints."""
    coco = load_coco(synthetic_coco / "annotations" / "person_keypoints_val.json")
    ann = max(coco.loadAnns(coco.getAnnIds()), key=lambda a: a["num_keypoints"])
    kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
    center, scale = box_to_center_scale(ann["bbox"], HM_W / HM_H)
    # UDP frame: mirroring the crop maps heatmap x to (w - 1) - x exactly.
    pts = apply_affine(kp[:, :2], CODECS["udp"].crop_affine(center, scale, 0.0, (HM_W, HM_H)))[None]
    original = render(pts)
    mirrored_pts = pts.copy()
    mirrored_pts[..., 0] = HM_W - 1 - mirrored_pts[..., 0]
    mirrored = render(mirrored_pts[:, COCO17.flip_index])  # channel k of the mirrored crop shows joint flip(k)
    back = flip_back(mirrored, COCO17.flip_index, shift=False)
    np.testing.assert_allclose(back, original, atol=1e-12)
    c0, _ = decode_heatmaps(original)
    c1, _ = decode_heatmaps(0.5 * (original + back))
    np.testing.assert_allclose(c1, c0, atol=1e-9)
    shifted, _ = decode_heatmaps(flip_back(mirrored, COCO17.flip_index, shift=True))
    inner = (pts[0, :, 0] > 4) & (pts[0, :, 0] < HM_W - 5) & (pts[0, :, 1] > 4) & (pts[0, :, 1] < HM_H - 5)
    assert inner.sum() >= 5
    np.testing.assert_allclose(shifted[0, inner, 0] - c0[0, inner, 0], 1.0, atol=1e-6)


def test_flip_back_rejects_bad_flip_index():
    with pytest.raises(ValueError, match="permutation"):
        flip_back(np.zeros((1, 17, 4, 4)), [0] * 17, shift=False)
    with pytest.raises(ValueError, match="\\(B, K, h, w\\)"):
        flip_back(np.zeros((17, 4, 4)), COCO17.flip_index, shift=False)


# --- back-projection -------------------------------------------------------------------------------------

@pytest.mark.parametrize("codec", ["hrnet", "udp", "tokenpose"])
def test_back_projection_round_trip_on_person_keypoints(synthetic_coco, codec):
    coco = load_coco(synthetic_coco / "annotations" / "person_keypoints_val.json")
    anns = [a for a in coco.loadAnns(coco.getAnnIds()) if a["num_keypoints"] >= 8 and not a["iscrowd"]][:6]
    kps = np.stack([np.asarray(a["keypoints"], dtype=np.float64).reshape(17, 3) for a in anns])
    cs = [box_to_center_scale(a["bbox"], HM_W / HM_H) for a in anns]
    centers = np.stack([c for c, _ in cs])
    scales = np.stack([s for _, s in cs])
    rot = np.linspace(-30, 30, len(anns))
    hm_pts = np.stack([apply_affine(kps[i, :, :2], CODECS[codec].crop_affine(centers[i], scales[i], rot[i], (HM_W, HM_H)))
                       for i in range(len(anns))])
    back = CODECS[codec].to_image(hm_pts, centers, scales, (HM_W, HM_H), rotations=rot)
    np.testing.assert_allclose(back, kps[:, :, :2], atol=1e-9)
    # Through rendered heatmaps and DARK: sub-pixel accuracy in the image for labelled joints inside the crop.
    coords, _ = CODECS[codec].decode(render(hm_pts))
    img = CODECS[codec].to_image(torch.from_numpy(coords), torch.from_numpy(centers), torch.from_numpy(scales),
                                 (HM_W, HM_H), rotations=torch.from_numpy(rot))
    # Away from the border, where the modulation blur's padding does not bend the Gaussian.
    m = 7
    inside = (kps[:, :, 2] > 0) & (hm_pts[..., 0] > m) & (hm_pts[..., 0] < HM_W - 1 - m) & (hm_pts[..., 1] > m) & (hm_pts[..., 1] < HM_H - 1 - m)
    px_per_cell = scales[:, 0] / HM_W
    err = np.linalg.norm(img.numpy() - kps[:, :, :2], axis=2) / px_per_cell[:, None]
    assert inside.sum() > 25
    assert err[inside].max() < 0.05


def test_back_projection_rejects_bad_shapes():
    codec = get_codec()
    with pytest.raises(ValueError, match="centers"):
        codec.to_image(np.zeros((2, 17, 2)), np.zeros((3, 2)), np.ones((2, 2)), (HM_W, HM_H))
    with pytest.raises(ValueError, match="one crop \\(centers, scales\\) per person"):
        codec.to_image(np.zeros((2, 17, 2)), np.zeros((3, 2)), np.full((3, 2), 10.0), (HM_W, HM_H))
    with pytest.raises(ValueError, match="positive"):
        codec.to_image(np.zeros((1, 17, 2)), np.zeros((1, 2)), np.zeros((1, 2)), (HM_W, HM_H))
    with pytest.raises(ValueError, match="NaN"):
        codec.to_image(np.zeros((1, 17, 2)), np.full((1, 2), np.nan), np.full((1, 2), 10.0), (HM_W, HM_H))
    with pytest.raises(ValueError, match="unknown codec 'msra'"):
        get_codec("msra")
