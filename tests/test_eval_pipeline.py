"""Decoding closes the loop with the data pipeline: targets of COCO-format persons decode back to their labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dspose_graph.data import CocoKeypointDataset
from dspose_graph.eval.coco_eval import evaluate_coco, make_coco_results


@pytest.mark.parametrize("codec", ["hrnet", "udp"])
def test_targets_decode_to_labels_and_score_ap_1(synthetic_coco, codec):
    ds = CocoKeypointDataset(synthetic_coco / "annotations" / "person_keypoints_val.json",
                             synthetic_coco / "images" / "val",
                             train=False, codec=codec, unbiased=True)
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    meta = batch["meta"]
    coords, maxvals = ds.codec.decode(batch["heatmap"])
    img = ds.codec.to_image(coords, meta["center"], meta["scale"], ds.heatmap_size, rotations=meta["rotation"].double())
    kps = meta["keypoints"].double()
    learned = batch["target_weight"] > 0
    # Joints whose whole Gaussian lies on the heatmap (no truncation by the border): sub-pixel recovery.
    hm_xy = coords.numpy()
    w, h = ds.heatmap_size
    interior = learned.numpy() & (hm_xy[..., 0] > 8) & (hm_xy[..., 0] < w - 9) & (hm_xy[..., 1] > 8) & (hm_xy[..., 1] < h - 9)
    cell = (meta["scale"][:, 0] / w).numpy()[:, None]
    err = np.linalg.norm(img.numpy() - kps[..., :2].numpy(), axis=2) / cell
    assert interior.sum() > 200
    assert err[interior].max() < 0.05
    # As COCO results (GT boxes, confidences from the heatmaps): every person found again.
    pred = torch.cat([img, maxvals.unsqueeze(2)], dim=2).numpy()
    results = make_coco_results(pred, meta["image_id"].numpy(), meta["score"].numpy(),
                                (meta["scale"][:, 0] * meta["scale"][:, 1]).numpy(), sigmas=ds.schema.sigmas)
    stats = evaluate_coco(results, ds.coco)
    assert stats["AP"] > 0.95 and stats["AP50"] == 1.0
