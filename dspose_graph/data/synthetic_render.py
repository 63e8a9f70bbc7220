"""Painting of synthetic persons: textured backgrounds, side-coloured bodies, occluders, visibility.

Helper of :mod:`dspose_graph.data.synthetic`, which samples and projects the bodies. Everything is
drawn with OpenCV at 1/16-pixel precision (``shift=4``) into the image, a label map (which body part
of which person, or an occluder, is on top at each pixel) and one silhouette mask per person. A joint
is visible (``v=2``) when the label on top at its pixel is one of the parts that meet at the joint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from dspose_graph.topology.schemas import COCO17

_I = {name: i for i, name in enumerate(COCO17.keypoints)}
_SHIFT = 4
_ONE = 1 << _SHIFT
OCCLUDER_LABEL = 65535
_PARTS_PER_PERSON = 32
OCCLUDER_P = 0.3
# Occluder side lengths as fractions of the person's height.
OCCLUDER_SIZE = (0.1, 0.35)
# Widths of limbs as fractions of stature.
_WIDTH = {"upper_arm": 0.050, "forearm": 0.040, "hand": 0.026, "thigh": 0.075, "shank": 0.055, "foot": 0.030,
          "torso": 0.150, "neck": 0.050}
_SKIN = ((255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 32))


@dataclass
class Person:
    """One projected body. ``joints`` (17, 2) image px; ``depth`` (17,) px, larger = nearer the camera;
    ``extra`` name -> (xy, depth) drawing-only points; ``head_axes`` (3, 3) columns are the head's
    left/up/forward directions in camera space; ``image_rotation`` (2, 2) the in-plane rotation."""

    joints: np.ndarray
    depth: np.ndarray
    extra: dict[str, tuple[np.ndarray, float]]
    head_axes: np.ndarray
    image_rotation: np.ndarray
    height_px: float
    head_radius: tuple[float, float]
    yaw: float
    roll: float


def _fx(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64) * _ONE).astype(np.int32)


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    px = np.uint8([[[int(h) % 180, int(s), int(v)]]])
    return tuple(int(c) for c in cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0])


def _noise(rng: np.random.Generator, w: int, h: int, channels: int, octaves: int = 4) -> np.ndarray:
    """Value noise in [0, 1): random grids of doubling resolution, upsampled and summed."""
    # Octaves are summed at a quarter of the size (they are smooth) and upsampled once.
    sw, sh = max(w // 4, 2), max(h // 4, 2)
    out = np.zeros((sh, sw, channels), np.float32)
    total = 0.0
    for o in range(octaves):
        cells = 2 ** (o + 1)
        grid = rng.random((cells + 1, cells + 1, channels), dtype=np.float32)
        out += 0.5 ** o * cv2.resize(grid, (sw, sh), interpolation=cv2.INTER_CUBIC).reshape(sh, sw, channels)
        total += 0.5 ** o
    up = cv2.resize(out / total, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, channels)
    return np.clip(up, 0.0, 1.0)


def background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A float32 (h, w, 3) RGB texture: coloured value noise plus stripes or blobs or clutter lines."""
    lo, hi = rng.uniform(0, 160, 3).astype(np.float32), rng.uniform(80, 255, 3).astype(np.float32)
    image = lo + (hi - lo) * _noise(rng, w, h, 3)
    kind = rng.integers(3)
    if kind == 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / period)
        image = image * (1 - 0.4 * wave[..., None]) + 0.4 * wave[..., None] * rng.uniform(0, 255, 3)
    elif kind == 1:
        blobs = np.zeros((h, w, 3), np.float32)
        for _ in range(rng.integers(3, 9)):
            c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            axes = (int(rng.uniform(0.05, 0.3) * w), int(rng.uniform(0.05, 0.3) * h))
            cv2.ellipse(blobs, c, axes, float(rng.uniform(0, 180)), 0, 360, rng.uniform(-80, 80, 3).tolist(), -1)
        image = image + cv2.GaussianBlur(blobs, (0, 0), 0.02 * (w + h))
    # Thin limb-like clutter so that colour alone does not find the body.
    for _ in range(rng.integers(0, 5)):
        p0, p1 = rng.uniform(0, 1, 2) * (w, h), rng.uniform(0, 1, 2) * (w, h)
        cv2.line(image, tuple(_fx(p0)), tuple(_fx(p1)), rng.uniform(0, 255, 3).tolist(),
                 int(rng.integers(2, max(3, w // 25))), cv2.LINE_AA, _SHIFT)
    return image


def _palette(rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    """Per-person colours. The person's left limbs are warm (red/orange) and right limbs cool (blue/cyan)."""
    left_h, right_h = rng.uniform(-8, 18), rng.uniform(95, 125)
    sat, val = rng.uniform(140, 255), rng.uniform(150, 255)
    skin = np.array(_SKIN[rng.integers(len(_SKIN))]) * rng.uniform(0.85, 1.1)
    return {
        "left_arm": _hsv(left_h, sat, val), "right_arm": _hsv(right_h, sat, val),
        "left_leg": _hsv(left_h + 5, sat, val * 0.75), "right_leg": _hsv(right_h + 5, sat, val * 0.75),
        "torso": _hsv(rng.uniform(0, 180), rng.uniform(0, 200), rng.uniform(60, 240)),
        "skin": tuple(int(c) for c in np.clip(skin, 0, 255)),
        "hair": _hsv(rng.uniform(0, 30), rng.uniform(50, 200), rng.uniform(20, 110)),
    }


def _head_shapes(person: Person, colours: dict[str, tuple[int, int, int]]) -> tuple[list, dict[int, bool]]:
    """Shapes of the head (hidden ears, hair, face, eyes, nose, visible ears) and which face points face the camera."""
    axes = person.head_axes
    rot = person.image_rotation
    rx, ry = person.head_radius
    centre = person.extra["head"][0]

    def to2d(v: np.ndarray) -> np.ndarray:
        return rot @ np.array([v[0], -v[1]])

    up, fwd = to2d(axes[:, 1]), to2d(axes[:, 2])
    angle = float(np.degrees(np.arctan2(-up[0], up[1])))
    facing = float(axes[2, 2])
    normals = {"nose": (0.0, 0.0, 1.0), "left_eye": (0.5, 0.0, 1.0), "right_eye": (-0.5, 0.0, 1.0),
               "left_ear": (1.0, 0.0, -0.2), "right_ear": (-1.0, 0.0, -0.2)}
    limits = {"nose": -0.2, "left_eye": 0.15, "right_eye": 0.15, "left_ear": -0.45, "right_ear": -0.45}
    seen = {}
    for name, n in normals.items():
        n = axes @ np.array(n)
        seen[_I[name]] = bool(n[2] / np.linalg.norm(n) > limits[name])
    ear_r = max(1.0, 0.3 * rx)
    ears = {k: ("ellipse", person.joints[_I[k]], (ear_r, 1.4 * ear_r), angle, colours["skin"]) for k in ("left_ear", "right_ear")}
    shapes = [ears[k] for k in ears if not seen[_I[k]]]
    shapes.append(("ellipse", centre, (rx, ry), angle, colours["hair"]))
    if facing > -0.1:
        face_c = centre + 0.35 * fwd * rx - 0.12 * ry * up / max(np.linalg.norm(up), 1e-6)
        shapes.append(("ellipse", face_c, (rx * (0.55 + 0.3 * facing), 0.8 * ry), angle, colours["skin"]))
    dot = max(1.0, 0.13 * rx)
    for name in ("left_eye", "right_eye"):
        if seen[_I[name]]:
            shapes.append(("circle", person.joints[_I[name]], dot, 0.0, (25, 20, 20)))
    if seen[_I["nose"]]:
        nose_colour = tuple(int(0.7 * c) for c in colours["skin"])
        shapes.append(("circle", person.joints[_I["nose"]], dot * 1.2, 0.0, nose_colour))
    shapes += [ears[k] for k in ears if seen[_I[k]]]
    return shapes, seen


def body_parts(person: Person, colours: dict[str, tuple[int, int, int]]) -> tuple[list[dict[str, Any]], dict[int, bool]]:
    """Drawable parts of one person: ``dict(depth, shapes, owners)``; owners are the joints at the part."""
    J, D, H = person.joints, person.depth, person.height_px
    ex = person.extra
    parts = []
    # Limbs sit beside the trunk: a small bias draws them over it where depths tie (frontal views).
    bias = 0.01 * H
    for side in ("left", "right"):
        sh, el, wr = (_I[f"{side}_{j}"] for j in ("shoulder", "elbow", "wrist"))
        hp, kn, an = (_I[f"{side}_{j}"] for j in ("hip", "knee", "ankle"))
        hand, toe = ex[f"{side}_hand"], ex[f"{side}_toe"]
        arm, leg = colours[f"{side}_arm"], colours[f"{side}_leg"]
        parts += [
            {"depth": (D[sh] + D[el]) / 2 + bias, "owners": (sh, el), "shapes": [("line", J[sh], J[el], _WIDTH["upper_arm"] * H, arm)]},
            {"depth": (D[el] + D[wr]) / 2 + bias, "owners": (el, wr), "shapes": [
                ("line", J[el], J[wr], _WIDTH["forearm"] * H, arm),
                ("line", J[wr], hand[0], _WIDTH["hand"] * H, colours["skin"])]},
            {"depth": (D[hp] + D[kn]) / 2 + bias, "owners": (hp, kn), "shapes": [("line", J[hp], J[kn], _WIDTH["thigh"] * H, leg)]},
            {"depth": (D[kn] + D[an]) / 2 + bias, "owners": (kn, an), "shapes": [
                ("line", J[kn], J[an], _WIDTH["shank"] * H, leg),
                ("line", J[an], toe[0], _WIDTH["foot"] * H, (40, 35, 30))]},
        ]
    corners = [_I[n] for n in ("left_shoulder", "right_shoulder", "right_hip", "left_hip")]
    mid_sh, mid_hip = J[corners[:2]].mean(0), J[corners[2:]].mean(0)
    parts.append({"depth": float(D[corners].mean()), "owners": tuple(corners), "shapes": [
        ("line", ex["neck"][0], ex["head"][0], _WIDTH["neck"] * H, colours["skin"]),
        ("poly", J[corners], colours["torso"]),
        ("line", mid_sh, mid_hip, _WIDTH["torso"] * H, colours["torso"])]})
    head_shapes, seen = _head_shapes(person, colours)
    face = tuple(_I[n] for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear"))
    # The head sits on top of the neck: drawn after the trunk whatever the lean, before limbs in front of it.
    head_depth = max(ex["head"][1], parts[-1]["depth"] + 0.5 * bias)
    parts.append({"depth": head_depth, "owners": face, "shapes": head_shapes})
    return parts, seen


def _draw(shape: tuple, targets: list[tuple[np.ndarray, Any, int]]) -> None:
    """Draw one shape on each ``(canvas, colour or None for the shape's own, line type)``."""
    kind = shape[0]
    for canvas, colour, line_type in targets:
        c = shape[-1] if colour is None else colour
        if kind == "line":
            _, p0, p1, width, _ = shape
            cv2.line(canvas, tuple(_fx(p0)), tuple(_fx(p1)), c, max(1, int(round(width))), line_type, _SHIFT)
        elif kind == "poly":
            hull = cv2.convexHull(_fx(shape[1]).reshape(-1, 1, 2))
            cv2.fillConvexPoly(canvas, hull, c, line_type, _SHIFT)
        elif kind == "ellipse":
            _, centre, axes, angle, _ = shape
            cv2.ellipse(canvas, tuple(_fx(centre)), tuple(_fx(np.maximum(axes, 0.5))), angle, 0, 360, c, -1, line_type, _SHIFT)
        else:
            _, centre, radius, _, _ = shape
            cv2.circle(canvas, tuple(_fx(centre)), int(round(max(radius, 0.5) * _ONE)), c, -1, line_type, _SHIFT)


def _occluder(rng: np.random.Generator, person: Person, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured rectangle over one of the person's joints: (corners (4, 2), texture (h, w, 3))."""
    j = person.joints[rng.integers(len(person.joints))]
    size = rng.uniform(*OCCLUDER_SIZE, 2) * person.height_px
    centre = j + rng.uniform(-0.3, 0.3, 2) * size
    a = rng.uniform(-0.3, 0.3)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    corners = centre + (np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * size / 2) @ rot.T
    colour = rng.uniform(0, 255, 3)
    texture = colour * (0.6 + 0.4 * _noise(rng, w, h, 1, octaves=3))
    return corners, texture


def _visible_polygons(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def render_image(rng: np.random.Generator, persons: list[Person], image_size: tuple[int, int]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Paint ``persons`` over a random background; returns the RGB uint8 image and one COCO annotation
    (``keypoints``, ``num_keypoints``, ``bbox``, ``area``, ``segmentation``, ``synthetic``) per person
    with at least one labelled keypoint."""
    w, h = image_size
    # Separate streams: switching occluders on or off changes nothing else in the image.
    bg_rng, paint_rng, occ_rng, noise_rng = rng.spawn(4)
    image = background(bg_rng, w, h)
    labels = np.zeros((h, w), np.uint16)
    silhouettes = [np.zeros((h, w), np.uint8) for _ in persons]
    order = np.argsort([p.height_px for p in persons], kind="stable")  # smaller = farther, drawn first
    owners, seen_all = {}, {}
    for pi in order:
        person = persons[pi]
        colours = _palette(paint_rng)
        parts, seen_all[pi] = body_parts(person, colours)
        for k, part in enumerate(sorted(parts, key=lambda q: q["depth"])):
            label = int(pi) * _PARTS_PER_PERSON + k + 1
            owners[label] = part["owners"]
            for shape in part["shapes"]:
                # Darker outline first: shading that separates overlapping limbs of one colour.
                if shape[0] == "line":
                    dark = tuple(int(0.55 * c) for c in shape[-1])
                    _draw(shape[:3] + (shape[3] + 2,) + (dark,), [(image, None, cv2.LINE_AA)])
                _draw(shape, [(image, None, cv2.LINE_AA), (labels, label, cv2.LINE_8), (silhouettes[pi], 255, cv2.LINE_8)])
    for person in persons:
        if occ_rng.random() < OCCLUDER_P:
            corners, texture = _occluder(occ_rng, person, w, h)
            region = np.zeros((h, w), np.uint8)
            cv2.fillConvexPoly(region, _fx(corners), 255, cv2.LINE_8, _SHIFT)
            inside = region > 0
            image[inside] = texture[inside]
            labels[inside] = OCCLUDER_LABEL
    image = image + np.float32(noise_rng.uniform(0, 8)) * noise_rng.standard_normal(image.shape, dtype=np.float32)
    if noise_rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (3, 3), 0)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    annotations = []
    for pi, person in enumerate(persons):
        ann = _annotate(pi, person, labels, silhouettes[pi], owners, seen_all[pi], w, h)
        if ann["num_keypoints"] > 0:
            annotations.append(ann)
    return image, annotations


def _annotate(pi: int, person: Person, labels: np.ndarray, silhouette: np.ndarray, owners: dict[int, tuple],
              seen: dict[int, bool], w: int, h: int) -> dict[str, Any]:
    kpts = np.zeros((len(person.joints), 3))
    for k, (x, y) in enumerate(person.joints):
        if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
            continue
        top = int(labels[int(round(y)), int(round(x))])
        mine = top != OCCLUDER_LABEL and (top - 1) // _PARTS_PER_PERSON == pi and k in owners.get(top, ())
        kpts[k] = (round(float(x), 2), round(float(y), 2), 2 if mine and seen.get(k, True) else 1)
    labelled = kpts[:, 2] > 0
    visible = ((labels - 1) // _PARTS_PER_PERSON == pi) & (labels > 0) & (labels != OCCLUDER_LABEL)
    ys, xs = np.nonzero(silhouette)
    lo = np.array([xs.min(), ys.min()], float) if len(xs) else np.array([w, h], float)
    hi = np.array([xs.max() + 1, ys.max() + 1], float) if len(xs) else np.zeros(2)
    if labelled.any():
        # The amodal box always holds the labelled keypoints, including the occluded ones.
        lo = np.minimum(lo, np.floor(kpts[labelled, :2].min(0)))
        hi = np.maximum(hi, np.ceil(kpts[labelled, :2].max(0)) + 1)
    lo, hi = np.clip(lo, 0, [w, h]), np.clip(hi, 0, [w, h])
    area = float(visible.sum()) or float((silhouette > 0).sum())
    return {
        "keypoints": [float(v) if i % 3 < 2 else int(v) for i, v in enumerate(kpts.reshape(-1))],
        "num_keypoints": int(labelled.sum()),
        "bbox": [float(lo[0]), float(lo[1]), float(max(hi[0] - lo[0], 0)), float(max(hi[1] - lo[1], 0))],
        "area": area,
        "segmentation": _visible_polygons(visible.astype(np.uint8)),
        "synthetic": {"yaw": round(person.yaw, 3), "roll": round(person.roll, 3), "height_px": round(person.height_px, 3)},
    }
