"""Synthetic COCO-17 person-keypoint dataset that the project generates itself.

Used by ``make demo`` and the tests where no real dataset is available. Each person is a 3-D
articulated stick body (segment lengths from anthropometric ratios, joint angles sampled inside
anatomical limits) that is turned by a random facing direction, projected orthographically, rotated,
scaled and placed in a procedurally textured image, then painted far-to-near with limbs coloured by
side (the person's left limbs warm, right limbs cool) so that left and right are learnable even from
behind. Visibility follows COCO: ``v=2`` visible, ``v=1`` inside the image but hidden (behind an
occluder, another person, the body itself, or a face point turned away), ``v=0`` with ``x=y=0``
outside the image.

Coordinates: body frame X = the person's left, Y = up, Z = the person's forward direction; the
camera looks along -Z, so a person facing the camera has its left on the image's right. Keypoint
pixel coordinates use the pixel-centre convention of OpenCV (pixel column ``j`` is centred at x=j).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dspose_graph.io import provenance
from dspose_graph.topology.schemas import COCO17

from dspose_graph.data import synthetic_render
from dspose_graph.data.synthetic_render import Person, render_image

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 0, "val": 1}

# Stature fractions of an upright adult (Drillis & Contini 1966 as tabulated in Winter, "Biomechanics
# and Motor Control of Human Movement"): joint heights above the floor, half widths, segment lengths.
PROPORTIONS = {
    "hip_height": 0.530, "hip_half_width": 0.087, "shoulder_height": 0.818, "shoulder_half_width": 0.115,
    "neck_height": 0.850, "head_centre": 0.935, "upper_arm": 0.186, "forearm": 0.146, "hand": 0.070,
    "thigh": 0.245, "shank": 0.246, "foot": 0.100, "head_rx": 0.050, "head_ry": 0.066,
}

# Joint angles in degrees: (relaxed range, anatomical range). Each angle draws from the relaxed range
# with probability RELAXED_P (everyday standing/walking poses), else from the full range.
ANGLES = {
    "shoulder_abduction": ((0, 30), (-10, 170)),
    "shoulder_flexion": ((-20, 40), (-45, 170)),
    "arm_twist": ((-20, 20), (-60, 60)),
    "elbow": ((0, 60), (0, 145)),
    "hip_abduction": ((0, 10), (-10, 45)),
    "hip_flexion": ((-15, 30), (-25, 110)),
    "leg_twist": ((-10, 10), (-30, 30)),
    "knee": ((0, 30), (0, 135)),
    "torso_pitch": ((-5, 10), (-15, 45)),
    "torso_roll": ((-5, 5), (-20, 20)),
    "torso_yaw": ((-10, 10), (-35, 35)),
    "head_yaw": ((-20, 20), (-70, 70)),
    "head_pitch": ((-10, 10), (-30, 30)),
}
RELAXED_P = 0.5
# Facing: near-frontal (yaw ~ N(0, FRONTAL_SD)) with probability FRONTAL_P, else uniform on the circle.
FRONTAL_P, FRONTAL_SD = 0.5, 30.0
ROLL_SD = 15.0
PROPORTION_JITTER = 0.08
# Person height as a fraction of the image height: one person per image, or several sharing it.
HEIGHT_SINGLE, HEIGHT_SEVERAL = (0.55, 0.9), (0.35, 0.7)
# Fraction of persons pushed towards an image edge (some joints then fall outside, v=0).
EDGE_P = 0.15

_I = {name: i for i, name in enumerate(COCO17.keypoints)}


def _rx(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _angle(rng: np.random.Generator, name: str) -> float:
    relaxed, full = ANGLES[name]
    lo, hi = relaxed if rng.random() < RELAXED_P else full
    return float(np.deg2rad(rng.uniform(lo, hi)))


def sample_body(rng: np.random.Generator) -> dict[str, Any]:
    """One random 3-D body in its own frame, pelvis at the origin, stature 1.

    Returns ``joints`` (17, 3) in COCO-17 order, ``extra`` 3-D points used only for drawing (neck, head
    centre, hand and foot tips), the head rotation ``head_R`` (3, 3) and the head radii ``head_r``.
    """
    p = {k: v * rng.uniform(1 - PROPORTION_JITTER, 1 + PROPORTION_JITTER) for k, v in PROPORTIONS.items()}
    J = np.zeros((17, 3))
    down = np.array([0.0, -1.0, 0.0])
    torso_R = _rz(_angle(rng, "torso_roll")) @ _rx(_angle(rng, "torso_pitch")) @ _ry(_angle(rng, "torso_yaw"))
    neck = torso_R @ np.array([0.0, p["neck_height"] - p["hip_height"], 0.0])
    extra = {"neck": neck}
    for side, s in (("left", 1.0), ("right", -1.0)):
        shoulder = torso_R @ np.array([s * p["shoulder_half_width"], p["shoulder_height"] - p["hip_height"], 0.0])
        arm_R = torso_R @ _rz(s * _angle(rng, "shoulder_abduction")) @ _rx(-_angle(rng, "shoulder_flexion")) \
            @ _ry(s * _angle(rng, "arm_twist"))
        elbow = shoulder + arm_R @ down * p["upper_arm"]
        fore_dir = arm_R @ _rx(-_angle(rng, "elbow")) @ down
        wrist = elbow + fore_dir * p["forearm"]
        hip = np.array([s * p["hip_half_width"], 0.0, 0.0])
        leg_R = _rz(s * _angle(rng, "hip_abduction")) @ _rx(-_angle(rng, "hip_flexion")) @ _ry(s * _angle(rng, "leg_twist"))
        knee = hip + leg_R @ down * p["thigh"]
        shank_R = leg_R @ _rx(_angle(rng, "knee"))
        ankle = knee + shank_R @ down * p["shank"]
        for part, xyz in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist), ("hip", hip), ("knee", knee), ("ankle", ankle)):
            J[_I[f"{side}_{part}"]] = xyz
        extra[f"{side}_hand"] = wrist + fore_dir * p["hand"]
        extra[f"{side}_toe"] = ankle + shank_R @ np.array([0.0, 0.0, p["foot"]])
    head_R = torso_R @ _ry(_angle(rng, "head_yaw")) @ _rx(_angle(rng, "head_pitch"))
    centre = neck + torso_R @ np.array([0.0, p["head_centre"] - p["neck_height"], 0.0])
    rx, ry = p["head_rx"], p["head_ry"]
    # Face points on the head surface, in the head's own frame (X left, Y up, Z forward).
    face = {"nose": (0.0, -0.15 * ry, 1.1 * rx), "left_eye": (0.4 * rx, 0.15 * ry, 0.85 * rx),
            "right_eye": (-0.4 * rx, 0.15 * ry, 0.85 * rx), "left_ear": (rx, 0.0, -0.1 * rx),
            "right_ear": (-rx, 0.0, -0.1 * rx)}
    for name, offset in face.items():
        J[_I[name]] = centre + head_R @ np.array(offset)
    extra["head"] = centre
    return {"joints": J, "extra": extra, "head_R": head_R, "head_r": (rx, ry)}


def project_person(rng: np.random.Generator, body: dict[str, Any], height_px: float, centre_xy: tuple[float, float],
                   yaw: float | None = None, roll: float | None = None, camera_pitch: float | None = None) -> Person:
    """Turn, project and place ``body``: a :class:`Person` with image-plane points and depths.

    ``yaw`` (0 = facing the camera, 90 = facing image right), in-plane ``roll`` and ``camera_pitch``
    are in degrees and drawn at random when ``None``.
    """
    sampled_yaw = rng.normal(0.0, FRONTAL_SD) if rng.random() < FRONTAL_P else rng.uniform(-180.0, 180.0)
    yaw = float(sampled_yaw if yaw is None else yaw)
    roll = float(rng.normal(0.0, ROLL_SD) if roll is None else roll)
    pitch = float(rng.uniform(-10, 10) if camera_pitch is None else camera_pitch)
    world_R = _rx(np.deg2rad(pitch)) @ _ry(np.deg2rad(yaw))
    c, s = np.cos(np.deg2rad(roll)), np.sin(np.deg2rad(roll))
    plane = np.array([[c, -s], [s, c]]) * height_px

    def to_image(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = np.atleast_2d(xyz) @ world_R.T
        uv = np.stack([q[:, 0], -q[:, 1]], axis=1) @ plane.T
        return uv, q[:, 2] * height_px

    uv, depth = to_image(body["joints"])
    names = list(body["extra"])
    extra_uv, extra_depth = to_image(np.stack([body["extra"][n] for n in names]))
    # Centre the figure's own box on the requested point.
    lo, hi = np.minimum(uv.min(0), extra_uv.min(0)), np.maximum(uv.max(0), extra_uv.max(0))
    shift = np.asarray(centre_xy) - (lo + hi) / 2
    head_R = world_R @ body["head_R"]
    return Person(
        joints=uv + shift, depth=depth,
        extra={n: (extra_uv[i] + shift, float(extra_depth[i])) for i, n in enumerate(names)},
        head_axes=head_R, image_rotation=plane / height_px, height_px=height_px,
        head_radius=(body["head_r"][0] * height_px, body["head_r"][1] * height_px),
        yaw=float(yaw), roll=roll,
    )


def describe_distributions() -> list[str]:
    """The generator's sampling distributions in words, read from the constants above (for reports).

    Also says why a generated image must not be mirrored: the person's left limbs are warm and right
    limbs cool, a colour code that a horizontal flip keeps while it swaps the left/right labels.
    """
    relaxed = ", ".join(f"{k} {lo:g}..{hi:g}" for k, ((lo, hi), _) in ANGLES.items())
    full = ", ".join(f"{k} {lo:g}..{hi:g}" for k, (_, (lo, hi)) in ANGLES.items())
    lo_occ, hi_occ = synthetic_render.OCCLUDER_SIZE
    return [
        f"pose: each joint angle (degrees) uniform in its relaxed range with p={RELAXED_P:g} ({relaxed}), "
        f"else in its anatomical range ({full}); segment lengths jittered by +-{100 * PROPORTION_JITTER:g}%",
        f"facing (yaw): N(0, {FRONTAL_SD:g} deg) with p={FRONTAL_P:g}, else uniform on the circle; "
        f"camera pitch uniform +-10 deg",
        f"in-plane rotation (roll): N(0, {ROLL_SD:g} deg)",
        f"size: person height uniform in {HEIGHT_SINGLE[0]:g}..{HEIGHT_SINGLE[1]:g} of the image height "
        f"({HEIGHT_SEVERAL[0]:g}..{HEIGHT_SEVERAL[1]:g} with several persons); p={EDGE_P:g} pushed towards an edge",
        f"occluders: p={synthetic_render.OCCLUDER_P:g} per person, a textured rectangle with sides of "
        f"{lo_occ:g}..{hi_occ:g} x the person's height "
        "over one random joint",
        "side cue: left limbs warm, right limbs cool; a mirrored image keeps the colours but swaps the labels, "
        "so flip augmentation and flip test are not used on this data",
    ]


def _persons_count(rng: np.random.Generator, persons_per_image: int | tuple[int, int]) -> int:
    if isinstance(persons_per_image, int):
        return persons_per_image
    return int(rng.integers(persons_per_image[0], persons_per_image[1] + 1))


def generate_image(rng: np.random.Generator, image_size: tuple[int, int],
                   persons_per_image: int | tuple[int, int] = 1) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One RGB uint8 image and its COCO annotations (without ids) from ``rng``."""
    w, h = image_size
    n = _persons_count(rng, persons_per_image)
    persons = []
    for _ in range(n):
        # One person fills most of the frame; several share it at smaller sizes.
        frac = rng.uniform(*(HEIGHT_SINGLE if n == 1 else HEIGHT_SEVERAL))
        height_px = frac * h
        # Mostly inside the frame; sometimes pushed over an edge so that joints fall outside (v=0).
        spread = 0.35 if rng.random() < EDGE_P else 0.12
        centre = (w * (0.5 + rng.uniform(-spread, spread) * (1 if n == 1 else 2.5)),
                  h * (0.5 + rng.uniform(-spread, spread)))
        persons.append(project_person(rng, sample_body(rng), height_px, centre))
    image, annotations = render_image(rng, persons, (w, h))
    return image, annotations


def _encode_image(image: np.ndarray, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode a synthetic image as JPEG")
    return buf.tobytes()


def coco_category() -> dict[str, Any]:
    """COCO's person category: 17 keypoint names and the 1-based skeleton, from ``COCO17``."""
    return {"supercategory": "person", "id": 1, "name": "person", "keypoints": list(COCO17.keypoints),
            "skeleton": [[a + 1, b + 1] for a, b in COCO17.skeleton]}


def _write_split(root: Path, split: str, count: int, image_size: tuple[int, int], seed: int,
                 persons_per_image: int | tuple[int, int], params: dict[str, Any]) -> None:
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    for index in range(count):
        # An independent stream per image: image i is the same whatever the dataset size.
        rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])
        image, anns = generate_image(rng, image_size, persons_per_image)
        image_id = index + 1
        file_name = f"{image_id:06d}.jpg"
        (image_dir / file_name).write_bytes(_encode_image(image))
        images.append({"id": image_id, "file_name": file_name, "width": image_size[0], "height": image_size[1], "license": 1})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0, **ann})
    data = {
        "info": {"description": f"dspose-graph synthetic person keypoints ({split})", "version": "1.0",
                 "provenance": provenance(None, split=split, **params)},
        "licenses": [{"id": 1, "name": "CC0 1.0 (generated by dspose-graph)", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "images": images, "annotations": annotations, "categories": [coco_category()],
    }
    ann_dir = root / "annotations"
    ann_dir.mkdir(exist_ok=True)
    (ann_dir / f"person_keypoints_{split}.json").write_text(json.dumps(data) + "\n")
    log.info("synthetic %s: %d images, %d persons", split, len(images), len(annotations))


def dataset_paths(out_dir: str | Path) -> dict[str, Path]:
    """Where :func:`generate_dataset` puts the annotation files and image folders under ``out_dir``."""
    out = Path(out_dir)
    paths = {}
    for split in SPLITS:
        paths[f"{split}_json"] = out / "annotations" / f"person_keypoints_{split}.json"
        paths[f"{split}_images"] = out / "images" / split
    return paths


def _existing_parameters(out: Path) -> dict[str, Any] | None:
    paths = dataset_paths(out)
    try:
        params = [json.loads(paths[f"{s}_json"].read_text())["info"]["provenance"]["parameters"] for s in SPLITS]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for p in params:
        p.pop("split", None)
    if params[0] != params[1]:
        return None
    # A dataset whose images were deleted or added to since is not reused.
    for split in SPLITS:
        if sum(1 for _ in paths[f"{split}_images"].glob("*.jpg")) != params[0].get(f"num_{split}"):
            return None
    return params[0]


def _check_args(num_train: int, num_val: int, image_size: tuple[int, int], persons_per_image: Any) -> None:
    for name, n in (("num_train", num_train), ("num_val", num_val)):
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"synthetic dataset: {name} must be a non-negative integer, got {n!r}")
    if len(image_size) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 32 for v in image_size):
        raise ValueError(f"synthetic dataset: image_size must be (width, height) integers >= 32, got {image_size!r}")
    ppi = persons_per_image
    if isinstance(ppi, (int, np.integer)):
        ok = 1 <= ppi <= 8
    else:
        ok = len(ppi) == 2 and all(isinstance(v, (int, np.integer)) for v in ppi) and 1 <= ppi[0] <= ppi[1] <= 8
    if not ok:
        raise ValueError(f"synthetic dataset: persons_per_image must be an integer or (min, max) in [1, 8], got {ppi!r}")


def generate_dataset(out_dir: str | Path, num_train: int, num_val: int, image_size: tuple[int, int] = (192, 256),
                     seed: int = 0, persons_per_image: int | tuple[int, int] = 1, overwrite: bool = False) -> dict[str, Path]:
    """Write a synthetic COCO-17 person-keypoint dataset to ``out_dir``; returns its paths.

    Layout: ``annotations/person_keypoints_{train,val}.json`` and ``images/{train,val}/NNNNNN.jpg``.
    The whole folder is built beside ``out_dir`` and renamed into place at the end, so a failure never
    leaves a partial dataset. If ``out_dir`` already holds a dataset generated with the same parameters
    it is reused as is; a different one is replaced only with ``overwrite=True``.

    Args:
        out_dir: the dataset folder to create.
        num_train, num_val: number of images per split.
        image_size: ``(width, height)`` in pixels.
        seed: everything (poses, textures, JPEG bytes) is a function of the seed and the image index.
        persons_per_image: a count, or ``(min, max)`` for a random count per image.
        overwrite: replace an existing, different ``out_dir``.

    Returns:
        ``dict(train_json=Path, val_json=Path, train_images=Path, val_images=Path)``.
    """
    image_size = tuple(int(v) if isinstance(v, (int, np.integer)) else v for v in image_size)
    if not isinstance(persons_per_image, (int, np.integer)):
        persons_per_image = tuple(persons_per_image)
    _check_args(num_train, num_val, image_size, persons_per_image)
    out = Path(out_dir)
    params = {"generator": "dspose_graph.data.synthetic", "num_train": int(num_train), "num_val": int(num_val),
              "image_size": list(image_size), "seed": int(seed),
              "persons_per_image": persons_per_image if isinstance(persons_per_image, int) else list(persons_per_image)}
    if out.exists():
        if _existing_parameters(out) == params:
            log.info("reusing synthetic dataset in %s (same parameters)", out)
            return dataset_paths(out)
        if not overwrite:
            raise ValueError(f"{out} already exists and is not a synthetic dataset with parameters {params}; "
                             "choose another folder or pass overwrite=True")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise ValueError(f"cannot create the synthetic dataset folder {out}: {e}") from None
    try:
        for split, count in (("train", num_train), ("val", num_val)):
            _write_split(tmp, split, int(count), image_size, int(seed), persons_per_image, params)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            out.replace(old / "dataset")
            tmp.replace(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dataset_paths(out)
