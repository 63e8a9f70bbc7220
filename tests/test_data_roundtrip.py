"""Data -> eval round trip: targets decoded with the eval code land back on the annotated joints.

This pins the crop, flip and target conventions of ``dspose_graph.data`` against the decoding and
back-projection of ``dspose_graph.eval.decode`` on a generated COCO-format set (images and annotations).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dspose_graph.data import CropParams, build_dataset, load_image


def stack(samples: list[dict]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    heat = torch.stack([s["heatmap"] for s in samples])
    weight = torch.stack([s["target_weight"] for s in samples])
    meta = {k: torch.stack([s["meta"][k] for s in samples]) for k in ("center", "scale", "rotation", "keypoints")}
    return heat, weight, meta


def image_error(ds, heat, weight, meta, method="dark", rotations=None) -> np.ndarray:
    """Pixel error (relative to the heatmap stride) of decoded targets vs the annotated joints."""
    coords, _ = ds.codec.decode(heat, method=method)
    pred = ds.codec.to_image(coords, meta["center"], meta["scale"], ds.heatmap_size, rotations=rotations)
    stride = (meta["scale"][:, 0] / ds.heatmap_size[0]).numpy()[:, None]
    err = np.linalg.norm(pred.numpy() - meta["keypoints"][..., :2].numpy(), axis=-1) / stride
    # Joints near the crop border have truncated Gaussians; score those whose patch is whole.
    coords = coords.numpy()
    w, h = ds.heatmap_size
    whole = (coords[..., 0] >= 6) & (coords[..., 0] <= w - 7) & (coords[..., 1] >= 6) & (coords[..., 1] <= h - 7)
    return err[(weight.numpy() > 0) & whole]


@pytest.mark.parametrize("codec", ["hrnet", "udp", "tokenpose"])
def test_unbiased_targets_decode_back_to_the_joints(synthetic_coco: Path, codec):
    ds = build_dataset("coco", synthetic_coco, "val", unbiased=True, codec=codec)
    heat, weight, meta = stack([ds[i] for i in range(len(ds))])
    err = image_error(ds, heat, weight, meta)
    assert len(err) > 200 and err.max() < 0.05


def test_msra_targets_are_off_by_the_rounding_only(synthetic_coco: Path):
    # HRNet's nearest-pixel targets are the "hrnet" codec's (no longer the default).
    ds = build_dataset("coco", synthetic_coco, "val", codec="hrnet")
    heat, weight, meta = stack([ds[i] for i in range(len(ds))])
    err = image_error(ds, heat, weight, meta)
    assert err.max() <= np.sqrt(0.5) + 0.05 and err.mean() > 0.2


@pytest.mark.parametrize("codec", ["hrnet", "udp", "tokenpose"])
def test_flip_back_and_rotation_round_trip(synthetic_coco: Path, codec):
    ds = build_dataset("coco", synthetic_coco, "val", train=True, unbiased=True, codec=codec)
    plain, flipped, rotated = [], [], []
    for i in range(len(ds)):
        rec = ds.records[i]
        image = load_image(rec.image_file)
        plain.append(ds.make_sample(i, rec, image, CropParams(rec.center, rec.scale)))
        flipped.append(ds.make_sample(i, rec, image, CropParams(rec.center, rec.scale, flip=True)))
        rotated.append(ds.make_sample(i, rec, image, CropParams(rec.center, rec.scale, rotation=30.0)))
    heat, weight, meta = stack(flipped)
    # The flip test's un-flipping (HRNet's one-pixel shift, none for UDP/TokenPose) recovers the un-flipped
    # targets exactly.
    back = ds.codec.flip_back(heat, ds.schema.flip_index)
    ref_heat, ref_weight, _ = stack(plain)
    inner = (slice(None), slice(None), slice(None), slice(1, -1))
    torch.testing.assert_close(back[inner], ref_heat[inner], atol=1e-5, rtol=0)
    assert len(image_error(ds, back, ref_weight, meta)) > 200 and image_error(ds, back, ref_weight, meta).max() < 0.05
    heat, weight, meta = stack(rotated)
    err = image_error(ds, heat, weight, meta, rotations=meta["rotation"])
    assert len(err) > 200 and err.max() < 0.05
