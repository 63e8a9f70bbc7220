"""The trainer's held-out evaluation glue: rescoring, OKS-NMS for detector boxes, MPII's 1-based frame."""

from __future__ import annotations

import numpy as np
import scipy.io

from dspose_graph.data.mpii import MPII_INDEX_BASE
from dspose_graph.train.evaluate import coco_results, compute_metrics, oks_sigmas
from dspose_graph.topology.schemas import COCO17

SIGMAS = np.asarray(COCO17.sigmas)


def _pred(ann_ids):
    rng = np.random.default_rng(0)
    person = np.c_[rng.uniform(50, 150, (17, 2))]
    n = len(ann_ids)
    return {
        "coords": np.repeat(person[None], n, 0) + rng.normal(0, 0.5, (n, 17, 2)),
        "scores": np.full((n, 17), 0.9),
        "image_id": np.full(n, 7),
        "ann_id": np.asarray(ann_ids),
        "box_score": np.linspace(1.0, 0.5, n),
        "scale": np.full((n, 2), 120.0),
        "center": np.full((n, 2), 100.0),
    }


def test_oks_nms_runs_with_detector_and_ground_truth_boxes():
    # Three near-identical poses: duplicates whatever the boxes were (official TokenPose applies OKS-NMS always);
    # the COCO-17 default sigmas (oks_sigmas gives None) no longer crash it.
    assert len(coco_results(_pred([-1, -1, -1]), oks_sigmas(COCO17))) == 1
    assert len(coco_results(_pred([1, 2, 3]), SIGMAS)) == 1
    apart = _pred([1, 2, 3])
    apart["coords"] = apart["coords"] + np.array([0.0, 300.0, 600.0])[:, None, None]
    assert len(coco_results(apart, SIGMAS)) == 3


def test_pckh_gets_mpii_one_based_coordinates(data_root):
    mat = data_root / "mpii" / "detections_our_format.mat"
    gt = scipy.io.loadmat(mat)
    pos = np.transpose(gt["pos_gt_src"], (2, 0, 1))  # (N, 16, 2), 1-based
    missing = np.transpose(gt["jnt_missing"], (1, 0)).astype(bool)
    head = gt["headboxes_src"]
    head_size = 0.6 * np.linalg.norm(head[1] - head[0], axis=0)
    # Shift every joint left (-x) to half a pixel inside its PCKh@0.1 radius, in MPIIDataset's 0-based frame: a
    # one-pixel frame error pushes every joint across the 0.1 threshold.
    shift = 0.1 * head_size[:, None] - 0.5
    coords = pos - MPII_INDEX_BASE
    coords[..., 0] -= shift
    n = len(pos)
    pred = {"coords": coords, "scores": np.ones((n, 16)), "scale": np.full((n, 2), 200.0),
            "gt": np.concatenate([pos - MPII_INDEX_BASE, (~missing)[..., None].astype(float)], axis=-1)}
    metrics = compute_metrics(pred, pckh_mat=mat)
    assert metrics["PCKh_Mean"] == 100.0
    assert metrics["PCKh_Mean@0.1"] == 100.0
