"""The "tokenpose" codec against an independent reference of official TokenPose's formulas, and codec round trips.

The reference below is written from official TokenPose's ``lib/utils/transforms.py`` (``get_affine_transform``:
three point pairs, the box width measured ``src_w - 1``, the grid centre ``(dst - 1) / 2``),
``lib/dataset/coco.py`` (``clean_bbox`` ``x2 - x1 + 1``, ``_xywh2cs`` centre ``x + (w - 1) / 2``, padding 1.25),
``lib/dataset/JointsDataset.py`` (``generate_target``: untruncated Gaussian at the exact joint,
``adjust_target_weight``; flip: mirror the image, ``x -> W - 1 - x``, centre likewise) and
``lib/core/inference.py`` (flip test without a shift). It shares no code with ``dspose_graph.data``.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dspose_graph.data import CocoKeypointDataset, CropParams, MPIIDataset, load_image
from dspose_graph.data.codec import CODECS, Codec, get_codec
from dspose_graph.data.image import IMAGENET_MEAN, IMAGENET_STD
from dspose_graph.eval.ideal import error_stats, perfect_network
from topology.schemas import COCO17, MPII16

INPUT, HEATMAP, SIGMA = (192, 256), (48, 64), 2.0


def official_affine(center, width_px: float, rot_deg: float, out_size) -> np.ndarray:
    """get_affine_transform: map centre -> grid centre and the box's top-mid direction -> the grid's."""
    dst_w, dst_h = out_size
    t = math.radians(rot_deg)
    half = -(width_px - 1) * 0.5
    src_dir = np.array([-half * math.sin(t), half * math.cos(t)])
    src = np.array([center, center + src_dir], dtype=np.float64)
    dst0 = np.array([(dst_w - 1) * 0.5, (dst_h - 1) * 0.5])
    dst = np.array([dst0, dst0 + [0.0, (dst_w - 1) * -0.5]])

    def third(a, b):
        d = a - b
        return b + np.array([-d[1], d[0]])

    src = np.vstack([src, third(src[0], src[1])])
    dst = np.vstack([dst, third(dst[0], dst[1])])
    # Solve dst = M @ [src, 1] for the 2x3 M (what cv2.getAffineTransform does, here in float64).
    a = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(a, dst).T


def official_center_scale(bbox, width, height, aspect):
    x, y, w, h = bbox
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(width - 1.0, x1 + max(0.0, w - 1.0)), min(height - 1.0, y1 + max(0.0, h - 1.0))
    w, h = x2 - x1 + 1, y2 - y1 + 1
    center = np.array([x1 + (w - 1) * 0.5, y1 + (h - 1) * 0.5])
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = h * aspect
    return center, np.array([w, h]) * 1.25


def official_targets(joints_hm: np.ndarray, vis: np.ndarray, size=HEATMAP, sigma=SIGMA):
    """generate_target for (K, 2) joints: adjust_target_weight's int() bounds, then the untruncated Gaussian."""
    w, h = size
    weight = (vis > 0).astype(np.float64)
    ul = np.trunc(joints_hm - 3 * sigma)  # Python's int() of the official code truncates towards zero
    br = np.trunc(joints_hm + 3 * sigma + 1)
    weight[(ul[:, 0] >= w) | (ul[:, 1] >= h) | (br[:, 0] < 0) | (br[:, 1] < 0)] = 0
    x = np.arange(w, dtype=np.float64)[None, None, :]
    y = np.arange(h, dtype=np.float64)[None, :, None]
    mx, my = joints_hm[:, 0, None, None], joints_hm[:, 1, None, None]
    target = np.exp(-((x - mx) ** 2 + (y - my) ** 2) / (2 * sigma**2)) * (weight > 0.5)[:, None, None]
    return target, weight


def official_sample(image, kps, center, scale_px, rot, flip, flip_pairs):
    """JointsDataset.__getitem__ after the random draws: (input uint8, heatmaps, weights, input affine)."""
    kps = kps.copy()
    center = center.copy()
    if flip:
        image = image[:, ::-1]
        kps[:, 0] = image.shape[1] - kps[:, 0] - 1
        for a, b in flip_pairs:
            kps[[a, b]] = kps[[b, a]]
        center[0] = image.shape[1] - center[0] - 1
    trans = official_affine(center, scale_px[0], rot, INPUT)
    trans_hm = official_affine(center, scale_px[0], rot, HEATMAP)
    patch = cv2.warpAffine(np.ascontiguousarray(image), trans, INPUT, flags=cv2.INTER_LINEAR)
    joints_hm = kps[:, :2] @ trans_hm[:, :2].T + trans_hm[:, 2]
    target, weight = official_targets(joints_hm, kps[:, 2])
    return patch, target, weight


def normalised(patch: np.ndarray) -> np.ndarray:
    return ((patch / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


@pytest.fixture(scope="module")
def coco_val(coco_mini: Path) -> CocoKeypointDataset:
    return CocoKeypointDataset(coco_mini / "annotations" / "person_keypoints_val.json", coco_mini / "images" / "val",
                               input_size=INPUT, heatmap_size=HEATMAP)


def test_default_codec_is_tokenpose_and_names_are_checked():
    assert get_codec() is CODECS["tokenpose"] and get_codec(CODECS["udp"]) is CODECS["udp"]
    with pytest.raises(ValueError, match=r"unknown codec 'dark'; valid: \['hrnet', 'tokenpose', 'udp'\]"):
        get_codec("dark")
    with pytest.raises(TypeError):
        get_codec("hrnet", udp=True)  # the legacy flag is gone: a codec is named


def test_each_codec_owns_its_crop_centre_flip_line_and_decoding_choices():
    """The grid point the box centre maps to is where the crop mirrors; the flags pick shift and DARK border."""
    center, scale, size = (100.0, 80.0), (96.0, 128.0), (48, 64)
    expected = {"tokenpose": (23.5, 31.5), "hrnet": (24.0, 32.0), "udp": (23.5, 31.5)}
    for name, codec in CODECS.items():
        m = codec.crop_matrix(center, scale, 0.0, size)
        np.testing.assert_allclose(m[:, :2] @ center + m[:, 2], expected[name])
        mirrored = codec.crop_matrix(center, scale, 0.0, size, flip=True)
        np.testing.assert_allclose(mirrored[:, :2] @ center + mirrored[:, 2], expected[name])
        back = codec.to_image(np.array([[expected[name]]]), np.array([center]), np.array([scale]), size)
        np.testing.assert_allclose(back[0, 0], center, atol=1e-9)
    with pytest.raises(TypeError, match="abstract"):
        Codec("plain", box_last_pixel=False, clip_detections=True, target="nearest", flip_shift=True,
              blur_border="reflect")  # a codec is a crop geometry too: only the subclasses have one
    assert [c.flip_shift for c in CODECS.values()] == [False, True, False]
    assert [c.blur_border for c in CODECS.values()] == ["zero", "reflect", "reflect"]


def test_evaluation_samples_equal_official_construction(coco_val):
    """Every coco_mini val person: box, input crop and targets as official TokenPose builds them."""
    fp = COCO17.flip_pairs
    for i, rec in enumerate(coco_val.records):
        ann = coco_val.coco.anns[rec.ann_id]
        img = coco_val.coco.imgs[rec.image_id]
        center, scale = official_center_scale(ann["bbox"], img["width"], img["height"], INPUT[0] / INPUT[1])
        np.testing.assert_allclose(rec.center, center, atol=1e-4)
        np.testing.assert_allclose(rec.scale, scale, atol=1e-4)
        image = load_image(rec.image_file)
        sample = coco_val[i]
        patch, target, weight = official_sample(image, rec.keypoints.astype(np.float64), center, scale, 0.0, False, fp)
        np.testing.assert_allclose(sample["heatmap"].numpy(), target, atol=1e-4)
        np.testing.assert_array_equal(sample["target_weight"].numpy(), weight)
        # Same affine to ~1e-12; OpenCV's fixed-point bilinear weights may round one level apart.
        assert np.abs(sample["image"].numpy() - normalised(patch)).max() < 0.02


@pytest.mark.parametrize("rot,flip,zoom", [(30.0, False, 1.2), (-75.0, True, 0.7), (12.0, True, 1.0)])
def test_augmented_samples_equal_official_construction(coco_val, rot, flip, zoom):
    """Scaled, rotated and mirrored crops; our crop (r, flip) is official's mirror-then-rotate by -r."""
    checked = 0
    for i, rec in list(enumerate(coco_val.records))[::4]:
        crop = CropParams(rec.center, rec.scale * zoom, rot, flip)
        image = load_image(rec.image_file)
        sample = coco_val.make_sample(i, rec, image, crop)
        patch, target, weight = official_sample(image, rec.keypoints.astype(np.float64), rec.center,
                                                rec.scale * zoom, -rot if flip else rot, flip, COCO17.flip_pairs)
        np.testing.assert_allclose(sample["heatmap"].numpy(), target, atol=1e-4)
        np.testing.assert_array_equal(sample["target_weight"].numpy(), weight)
        diff = np.abs(sample["image"].numpy() - normalised(patch))
        assert diff.max() < 0.02 and diff.mean() < 1e-3
        checked += int(weight.sum())
    assert checked > 100


def test_perfect_network_round_trip_default_codec(coco_val):
    """Own targets, flip test + DARK, back to the image: coco_mini val's 648 keypoints with a target."""
    stats = error_stats(perfect_network(coco_val, flip_test=True))
    assert stats["count"] == 648
    assert stats["mean_error"] < 0.05 and abs(stats["x_bias"]) < 0.01 and abs(stats["y_bias"]) < 0.05
    # HRNet's conventions through the same check: its flip shift leaves the +0.5 px x-bias the issue measured.
    hrnet = CocoKeypointDataset(coco_val.ann_file, coco_val.image_dir, codec="hrnet", input_size=INPUT,
                                heatmap_size=HEATMAP)
    assert error_stats(perfect_network(hrnet, flip_test=True))["x_bias"] > 0.4


def test_official_mpii_heatmaps_decode_with_the_official_decode(mpii_annotations: Path, tmp_path: Path):
    """Heatmaps an official TokenPose model would ideally emit for MPII val persons (and for their mirrored
    crops) decode back onto the joints with the tokenpose codec; HRNet's decode of the same maps is far off."""
    ds = MPIIDataset(mpii_annotations, tmp_path, split="val")
    size = ds.heatmap_size
    errors: dict[str, list[np.ndarray]] = {"tokenpose": [], "hrnet": []}
    for start in range(0, len(ds.records), 256):
        recs = ds.records[start:start + 256]
        heat, mirrored, gt = [], [], []
        for rec in recs:
            trans_hm = official_affine(rec.center, rec.scale[0], 0.0, size)
            joints = rec.keypoints[:, :2].astype(np.float64) @ trans_hm[:, :2].T + trans_hm[:, 2]
            t, w = official_targets(joints, rec.keypoints[:, 2], size)
            m = joints[MPII16.flip_index].copy()
            m[:, 0] = size[0] - 1 - m[:, 0]  # the network's input mirrored as an array
            heat.append(t)
            mirrored.append(official_targets(m, rec.keypoints[MPII16.flip_index, 2], size)[0])
            gt.append(np.concatenate([rec.keypoints[:, :2], w[:, None]], axis=1))
        heat = torch.from_numpy(np.stack(heat).astype(np.float32))
        mirrored = torch.from_numpy(np.stack(mirrored).astype(np.float32))
        gt = np.stack(gt)
        centers, scales = np.stack([r.center for r in recs]), np.stack([r.scale for r in recs])
        for codec, out in errors.items():
            c = CODECS[codec]
            avg = 0.5 * (heat + c.flip_back(mirrored, MPII16.flip_index))
            coords, _ = c.decode(avg)
            pts = c.to_image(coords.numpy(), centers, scales, size)
            out.append((pts - gt[..., :2])[gt[..., 2] > 0])
    d = np.concatenate(errors["tokenpose"])
    assert len(d) > 40_000
    assert np.abs(d.mean(axis=0)).max() < 0.1 and np.linalg.norm(d, axis=1).mean() < 0.1
    assert np.linalg.norm(np.concatenate(errors["hrnet"]), axis=1).mean() > 1.0
