"""The flip test and PCK of ``dspose_graph.eval``: equivalence with the written-out formula, a mirror-symmetric
network as a fixed point, hand-computed PCK values and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dspose_graph.data.codec import CODECS
from dspose_graph.data.transforms import BOX_PADDING, box_to_center_scale
from dspose_graph.eval.decode import flip_back
from dspose_graph.eval.flip import flip_test_heatmaps
from dspose_graph.eval.pck import pck, pck_normalizer


def _conv(k: int, symmetric: bool = False) -> torch.nn.Conv2d:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, k, 3, padding=1).double()
    if symmetric:
        with torch.no_grad():
            conv.weight.copy_(0.5 * (conv.weight + conv.weight.flip(3)))
    return conv.eval()


@pytest.mark.parametrize("codec,shift", [("hrnet", True), ("udp", False), ("tokenpose", False)])
def test_flip_test_is_the_average_with_the_mapped_back_mirror(codec, shift):
    """The shift is the codec's: HRNet's one pixel, none for UDP and TokenPose."""
    forward = _conv(4)
    images = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    flip_index = [1, 0, 3, 2]
    with torch.no_grad():
        got = flip_test_heatmaps(forward, images, flip_index, codec)
        assert torch.equal(got, flip_test_heatmaps(forward, images, flip_index, CODECS[codec]))
        expected = 0.5 * (forward(images) + flip_back(forward(images.flip(3)), flip_index, shift=shift))
    assert got.dtype == torch.float32 and got.shape == (2, 4, 8, 6)
    torch.testing.assert_close(got, expected.float())


def test_mirror_symmetric_network_is_a_fixed_point_without_shift():
    # A left-right symmetric kernel commutes with mirroring, so with the identity permutation the mirrored
    # crop's heatmaps map back exactly onto the crop's own; HRNet's shift would move them one pixel.
    forward = _conv(3, symmetric=True)
    images = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    with torch.no_grad():
        plain = forward(images).float()
        torch.testing.assert_close(flip_test_heatmaps(forward, images, [0, 1, 2], "tokenpose"), plain)
        assert not torch.allclose(flip_test_heatmaps(forward, images, [0, 1, 2], "hrnet"), plain)


def test_flip_test_takes_a_tensor_flip_index_and_rejects_bad_input():
    forward = _conv(2)
    images = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(flip_test_heatmaps(forward, images, torch.tensor([1, 0]), "udp"),
                                   flip_test_heatmaps(forward, images, [1, 0], "udp"))
        with pytest.raises(ValueError, match=r"images must be \(B, 3, H, W\)"):
            flip_test_heatmaps(forward, images[0], [1, 0], "udp")
        with pytest.raises(ValueError, match="flip_index must be a permutation"):
            flip_test_heatmaps(forward, images, [0, 0], "udp")
        with pytest.raises(ValueError, match="unknown codec 'shift'"):
            flip_test_heatmaps(forward, images, [1, 0], "shift")
        # No default: the shift must come from the codec the crops were cut with.
        with pytest.raises(TypeError):
            flip_test_heatmaps(forward, images, [1, 0])  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            flip_test_heatmaps(forward, images, [1, 0], shift=False)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            flip_back(images, [1, 0])  # type: ignore[call-arg]


def test_pck_normalizer_undoes_the_crop_padding():
    # A 50 x 200 box cropped at aspect 3/4 with the datasets' padding: the longest side is 200 again.
    _, scale = box_to_center_scale([10, 20, 50, 200], 0.75)
    assert BOX_PADDING == 1.25
    np.testing.assert_allclose(pck_normalizer(scale[None]), [200.0])
    np.testing.assert_allclose(pck_normalizer([[100.0, 50.0]], padding=2.0), [50.0])


def test_pck_hand_computed():
    # Person 0: size 100, so the radius is 20 px; person 1: size 50, radius 10 px.
    gt = np.array([[[0, 0, 2], [10, 10, 1], [50, 50, 0]],
                   [[0, 0, 2], [0, 0, 2], [0, 0, 2]]], dtype=np.float64)
    coords = np.array([[[19.9, 0], [10, 31], [50, 50]],        # in, out, unlabelled (not counted)
                       [[6, 8], [10, 0], [0, 9.99]]])           # 10 px (not < 10), exactly 10, in
    size = np.array([100.0, 50.0])
    assert pck(coords, gt, size, threshold=0.2) == pytest.approx(100 * 2 / 5)
    assert pck(coords, gt, size, threshold=0.5) == pytest.approx(100.0)


def test_pck_bad_input():
    gt = np.zeros((1, 3, 3))
    with pytest.raises(ValueError, match="no labelled keypoint"):
        pck(np.zeros((1, 3, 2)), gt, np.ones(1))
    with pytest.raises(ValueError, match=r"expected coords \(N, K, 2\), gt \(N, K, 3\), size \(N,\)"):
        pck(np.zeros((1, 3, 2)), np.zeros((1, 4, 3)), np.ones(1))
    with pytest.raises(ValueError, match=r"scale must be \(N, 2\)"):
        pck_normalizer(np.ones(3))
