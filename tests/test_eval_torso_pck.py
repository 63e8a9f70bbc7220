"""Torso PCK (the LSP papers' metric), the swap rate and the mirror rate as evaluation metrics: hand-computed
values, persons without a torso left out and counted, the metric keys training logs, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from dspose_graph.eval.pck import mirror_rate, swap_rate, torso_joints, torso_pck
from dspose_graph.train.evaluate import compute_metrics
from dspose_graph.topology.schemas import COCO17, LSP14, MPII16, KeypointSchema

L_SHOULDER, R_HIP = LSP14.keypoints.index("l_shoulder"), LSP14.keypoints.index("r_hip")


def _person(offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """An LSP person whose left shoulder and right hip are 50 px apart (a 3-4-5 triangle), all joints labelled."""
    gt = np.zeros((14, 3))
    gt[:, 0] = np.arange(14) * 7.0 + offset[0]
    gt[:, 1] = 100.0 + offset[1]
    gt[L_SHOULDER, :2] = (0.0 + offset[0], 0.0 + offset[1])
    gt[R_HIP, :2] = (30.0 + offset[0], 40.0 + offset[1])
    gt[:, 2] = 2
    return gt


def test_torso_joints_of_the_built_in_skeletons():
    assert torso_joints(LSP14) == (9, 2)
    assert torso_joints(MPII16) == (MPII16.keypoints.index("l_shoulder"), MPII16.keypoints.index("r_hip"))
    assert torso_joints(COCO17) == (5, 12)
    assert torso_joints(KeypointSchema(name="k2", keypoints=("a", "b"), skeleton=(), flip_pairs=())) is None


def test_threshold_is_a_fifth_of_the_shoulder_hip_distance():
    gt = _person()[None]
    pred = gt[..., :2].copy()
    pred[0, 0, 0] += 9.99   # torso 50 px: 0.2 x 50 = 10 px, just inside
    pred[0, 1, 1] += 10.01  # just outside
    result = torso_pck(pred, gt, (L_SHOULDER, R_HIP))
    assert result["mean"] == pytest.approx(100 * 13 / 14)
    assert result["per_joint"][0] == 100 and result["per_joint"][1] == 0
    assert result["persons"] == 1 and result["left_out"] == 0


def test_persons_without_a_torso_are_left_out_and_unlabelled_joints_never_count():
    a, b = _person(), _person((5.0, 5.0))
    b[R_HIP] = 0            # right hip not labelled: no torso size for b
    a[3] = 0                # a's left hip not labelled: not scored
    gt = np.stack([a, b])
    pred = gt[..., :2] + 100.0  # everything wrong: b would count if it were scored
    pred[0] = gt[0, :, :2]      # a exactly right
    result = torso_pck(pred, gt, (L_SHOULDER, R_HIP))
    assert result["mean"] == 100.0 and result["persons"] == 1 and result["left_out"] == 1
    assert np.isnan(result["per_joint"][3])  # never counted
    with pytest.raises(ValueError, match="no person with a labelled left shoulder and right hip"):
        torso_pck(pred[1:], gt[1:], (L_SHOULDER, R_HIP))
    with pytest.raises(ValueError, match=r"expected coords \(N, K, 2\) and gt \(N, K, 3\)"):
        torso_pck(pred[..., :1], gt, (L_SHOULDER, R_HIP))


def test_swap_rate_counts_crossed_pairs_only_where_both_joints_are_labelled():
    gt = _person()[None]
    straight = gt[..., :2].copy()
    assert swap_rate(straight, gt, LSP14) == 0.0
    crossed = straight.copy()
    for left, right in LSP14.flip_pairs:
        crossed[0, [left, right]] = straight[0, [right, left]]
    assert swap_rate(crossed, gt, LSP14) == 100.0
    with pytest.raises(ValueError, match="has no left/right pairs"):
        swap_rate(straight, gt, KeypointSchema(name="k14", keypoints=tuple(f"j{i}" for i in range(14)),
                                               skeleton=(), flip_pairs=()))


def test_compute_metrics_adds_torso_pck_per_joint_and_swap_for_a_skeleton():
    gt = np.stack([_person(), _person((3.0, 2.0))])
    pred = {"coords": gt[..., :2] + [0.0, 12.0], "gt": gt, "scale": np.full((2, 2), 200.0)}
    metrics = compute_metrics(pred, schema=LSP14)
    # Every joint 12 px off: outside 0.2 x 50 px of torso, inside 0.2 x 160 px of the box's longest side.
    assert metrics["torso_PCK@0.2"] == 0.0 and metrics["PCK@0.2"] == 100.0
    assert metrics["torso_persons"] == 2.0 and metrics["swap"] == 0.0 and metrics["mirror"] == 0.0
    assert {k for k in metrics if k.startswith("torso_PCK@0.2/")} == {f"torso_PCK@0.2/{n}" for n in LSP14.keypoints}
    assert "torso_PCK@0.2" not in compute_metrics(pred)  # no skeleton given: the box PCK only


def _crossed(coords: np.ndarray, pairs) -> np.ndarray:
    out = coords.copy()
    for left, right in pairs:
        out[:, [left, right]] = coords[:, [right, left]]
    return out


def test_mirror_rate_counts_pairs_predicted_on_the_other_side_not_pairs_far_from_both():
    gt = _person()[None]  # torso 50 px: the limit is 10 px; the person's left/right joints are 35-77 px apart
    torso = (L_SHOULDER, R_HIP)
    exact = gt[..., :2].copy()
    assert mirror_rate(exact, gt, LSP14, torso) == 0.0
    crossed = _crossed(exact, LSP14.flip_pairs)
    assert mirror_rate(crossed, gt, LSP14, torso) == 100.0 and swap_rate(crossed, gt, LSP14) == 100.0
    # Crossed, but 12 px off: nearer the other side (the swap rate counts them all), within 10 px of neither.
    far = crossed + [0.0, 12.0]
    assert swap_rate(far, gt, LSP14) == 100.0 and mirror_rate(far, gt, LSP14, torso) == 0.0
    # Only the wrists crossed, 9 px off (inside the limit): one pair of six.
    wrists = (LSP14.keypoints.index("l_wrist"), LSP14.keypoints.index("r_wrist"))
    one = _crossed(exact, [wrists]) + [9.0, 0.0]
    assert mirror_rate(one, gt, LSP14, torso) == pytest.approx(100 / 6)


def test_mirror_rate_leaves_side_views_and_persons_without_a_torso_out():
    side = _person()
    knees = (LSP14.keypoints.index("l_knee"), LSP14.keypoints.index("r_knee"))
    side[knees[1], :2] = side[knees[0], :2] + [4.0, 0.0]  # a side view: the knees' labels 4 px apart
    gt = side[None]
    crossed = _crossed(gt[..., :2], [knees])
    # Both assignments are within the limit: the swap rate counts the knees crossed, the mirror rate does not.
    assert swap_rate(crossed, gt, LSP14) == pytest.approx(100 / 6)
    assert mirror_rate(crossed, gt, LSP14, (L_SHOULDER, R_HIP)) == 0.0
    headless = _person()
    headless[R_HIP, 2] = 0  # no torso size: not counted, so only the first person's six pairs are
    gt2 = np.stack([_person(), headless])
    pred = np.stack([gt2[0, :, :2], _crossed(gt2[1:, :, :2], LSP14.flip_pairs)[0]])
    assert mirror_rate(pred, gt2, LSP14, (L_SHOULDER, R_HIP)) == 0.0
    with pytest.raises(ValueError, match="no person with a torso size has both joints of a left/right pair"):
        mirror_rate(pred[1:], gt2[1:], LSP14, (L_SHOULDER, R_HIP))
    with pytest.raises(ValueError, match="has no left/right pairs"):
        mirror_rate(pred, gt2, KeypointSchema(name="k14", keypoints=tuple(f"j{i}" for i in range(14)), skeleton=(),
                                              flip_pairs=()), (L_SHOULDER, R_HIP))
