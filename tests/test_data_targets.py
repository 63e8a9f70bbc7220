"""Gaussian heatmap targets: golden values against a per-pixel reference, encodings, weights."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dspose_graph.data.codec import CODECS
from dspose_graph.data.targets import gaussian_heatmaps


def reference_heatmap(x: float, y: float, visible: bool, size: tuple[int, int], sigma: float, unbiased: bool):
    """A per-joint, per-pixel Gaussian patch; weight 1 iff visible and the patch touches the heatmap."""
    w, h = size
    out = np.zeros((h, w))
    mx, my = math.floor(x + 0.5), math.floor(y + 0.5)
    r = 3 * sigma
    cx, cy = (x, y) if unbiased else (mx, my)
    for yy in range(h):
        for xx in range(w):
            if abs(xx - mx) <= r and abs(yy - my) <= r:
                out[yy, xx] = math.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    if not visible or not out.any():
        return np.zeros_like(out), 0.0
    return out, 1.0


JOINTS = np.array([[10.3, 20.7], [0.0, 0.0], [47.6, 63.4], [-3.2, 10.0], [-7.2, 5.0], [30.0, 70.1],
                   [24.5, 31.5], [52.9, 2.0], [-6.4, 5.0], [20.0, 69.4]])
VISIBLE = np.array([1, 1, 1, 1, 1, 1, 1, 0, 1, 1], dtype=bool)


@pytest.mark.parametrize("unbiased", [False, True])
def test_matches_per_pixel_reference(unbiased):
    heat, weight = gaussian_heatmaps(JOINTS, VISIBLE, (48, 64), sigma=2.0, unbiased=unbiased)
    assert heat.shape == (10, 64, 48) and heat.dtype == np.float32
    assert weight.shape == (10,) and weight.dtype == np.float32
    for k, ((x, y), v) in enumerate(zip(JOINTS, VISIBLE)):
        ref, ref_w = reference_heatmap(x, y, v, (48, 64), 2.0, unbiased)
        np.testing.assert_allclose(heat[k], ref, atol=1e-6)
        assert weight[k] == ref_w
    # Joints 4 (nearest column -7) and 5 (nearest row 70) are 7 px off the heatmap, beyond the 3 sigma
    # patch; joint 7 is not visible; joints 8 (column -6) and 9 (row 69) just reach the border.
    assert weight.tolist() == [1, 1, 1, 1, 0, 0, 1, 0, 1, 1]
    assert heat[8, :, 0].max() > 0 and heat[9, 63].max() > 0


def test_plain_peak_is_nearest_pixel_unbiased_keeps_subpixel():
    joint = np.array([[20.3, 30.8]])
    plain, _ = gaussian_heatmaps(joint, [True], (48, 64), unbiased=False)
    unb, _ = gaussian_heatmaps(joint, [True], (48, 64), unbiased=True)
    assert np.unravel_index(plain[0].argmax(), plain[0].shape) == (31, 20)
    assert plain[0].max() == pytest.approx(1.0)
    # The log of the unbiased map is an exact parabola: its vertex from three pixels is the joint.
    def vertex(l_minus, l0, l_plus):
        return (l_plus - l_minus) / (2.0 * (2.0 * l0 - l_plus - l_minus))

    log = np.log(unb[0, 29:34, 18:23].astype(np.float64))
    assert 20 + vertex(log[2, 1], log[2, 2], log[2, 3]) == pytest.approx(20.3, abs=1e-4)
    assert 31 + vertex(log[1, 2], log[2, 2], log[3, 2]) == pytest.approx(30.8, abs=1e-4)
    log = np.log(plain[0, 29:34, 18:23].astype(np.float64))
    assert vertex(log[2, 1], log[2, 2], log[2, 3]) == pytest.approx(0.0, abs=1e-6)


def test_batched_equals_per_sample():
    rng = np.random.default_rng(0)
    joints = rng.uniform(-10, 60, size=(4, 17, 2))
    vis = rng.random((4, 17)) > 0.2
    heat, weight = gaussian_heatmaps(joints, vis, (48, 64), sigma=2.0, unbiased=True)
    assert heat.shape == (4, 17, 64, 48)
    for b in range(4):
        hb, wb = gaussian_heatmaps(joints[b], vis[b], (48, 64), sigma=2.0, unbiased=True)
        np.testing.assert_array_equal(heat[b], hb)
        np.testing.assert_array_equal(weight[b], wb)


def test_non_finite_joint_gets_zero_weight_and_map():
    heat, weight = gaussian_heatmaps(np.array([[np.nan, 3.0], [5.0, 5.0]]), [True, True], (48, 64))
    assert weight.tolist() == [0.0, 1.0]
    assert not heat[0].any() and np.isfinite(heat).all()


def test_udp_stride_aligns_first_and_last_pixel_centres():
    pts = np.array([[0.0, 0.0], [191.0, 255.0], [96.0, 128.0]])
    udp = CODECS["udp"].joints_to_heatmap(pts, (192, 256), (48, 64))
    np.testing.assert_allclose(udp, [[0, 0], [47, 63], [96 * 47 / 191, 128 * 63 / 255]])
    plain = CODECS["hrnet"].joints_to_heatmap(pts, (192, 256), (48, 64))
    np.testing.assert_allclose(plain, [[0, 0], [47.75, 63.75], [24, 32]])


def test_bad_arguments():
    with pytest.raises(ValueError, match="sigma"):
        gaussian_heatmaps(JOINTS, VISIBLE, (48, 64), sigma=0)
    with pytest.raises(ValueError, match="shape"):
        gaussian_heatmaps(np.zeros((3, 3)), [1, 1, 1], (48, 64))
