"""``dspose topology`` on real-world and bad inputs: CrowdPose files go through, bad files name file/record/field."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from dspose_graph.cli.main import EXIT_INPUT, EXIT_OK, EXIT_OS, main
from dspose_graph.topology.files import load_topology
from dspose_graph.topology.schemas import KeypointSchema, get_schema

# CrowdPose's 14 keypoints, in its order (CrowdPose annotation files, categories[0].keypoints).
CROWDPOSE_NAMES = ["left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                   "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck"]
# COCO's 1-based 17-keypoint skeleton, which real CrowdPose files carry next to their 14 keypoints.
COCO_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
                 [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]
# Edges of COCO_SKELETON naming a keypoint beyond CrowdPose's 14.
INVALID_EDGES = [e for e in COCO_SKELETON if max(e) > 14]
# A standing person, (x, y) per CrowdPose keypoint, in a 100 x 200 box.
TEMPLATE = np.array([[30, 40], [70, 40], [25, 70], [75, 70], [22, 100], [78, 100], [38, 105], [62, 105],
                     [37, 145], [63, 145], [36, 185], [64, 185], [50, 8], [50, 30]], dtype=np.float64)


def crowdpose_file(path: Path, persons: int = 240, seed: int = 0) -> Path:
    """A CrowdPose-style COCO file: 14 keypoints, COCO's skeleton, persons varying in place, size and limbs."""
    rng = np.random.default_rng(seed)
    annotations, images = [], []
    for i in range(persons):
        scale = rng.uniform(0.5, 2.0)
        pose = TEMPLATE * scale + rng.uniform(0, 400, size=2)
        # Limbs move together: one random offset per arm and leg chain, plus per-joint jitter.
        for chain in ((0, 2, 4), (1, 3, 5), (6, 8, 10), (7, 9, 11), (12, 13)):
            pose[list(chain)] += rng.normal(0, 12 * scale, size=2)
        pose += rng.normal(0, 2 * scale, size=pose.shape)
        kp = np.concatenate([pose, np.full((14, 1), 2.0)], axis=1)
        x0, y0 = pose.min(0)
        w, h = pose.max(0) - pose.min(0)
        images.append({"id": i + 1, "file_name": f"{i + 1:06d}.jpg", "width": 640, "height": 640})
        annotations.append({"id": 1000 + i, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 14,
                            "keypoints": [round(float(v), 2) for v in kp.reshape(-1)],
                            "bbox": [float(x0), float(y0), float(w), float(h)], "area": float(w * h)})
    category = {"id": 1, "name": "person", "supercategory": "person", "keypoints": CROWDPOSE_NAMES,
                "skeleton": COCO_SKELETON}
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [category]}))
    return path


def test_crowdpose_category_keeps_its_valid_edges_and_warns_naming_file_and_edges(caplog):
    category = {"name": "person", "keypoints": CROWDPOSE_NAMES, "skeleton": COCO_SKELETON}
    with caplog.at_level(logging.WARNING, logger="dspose_graph.topology.schemas"):
        schema = KeypointSchema.from_coco_category(category, source="crowdpose_val.json")
    kept = [(a - 1, b - 1) for a, b in COCO_SKELETON if max(a, b) <= 14]
    assert schema.skeleton == tuple(kept) and len(kept) == len(COCO_SKELETON) - len(INVALID_EDGES)
    assert schema.num_keypoints == 14 and all(max(e) < 14 for e in schema.skeleton)
    # left/right names pair up: 6 flip pairs (shoulders, elbows, wrists, hips, knees, ankles).
    assert len(schema.flip_pairs) == 6
    text = caplog.text
    assert "crowdpose_val.json" in text and f"dropped {len(INVALID_EDGES)} of {len(COCO_SKELETON)} edges" in text
    assert all(str(e) in text for e in INVALID_EDGES)


@pytest.mark.parametrize("skeleton,kept", [
    ([[1, 2], [0, 1]], ((0, 1),)),              # 0 is not a 1-based index
    ([[1, 2], [1, 2, 3]], ((0, 1),)),           # not a pair
    ([[1, 2], ["1", "2"]], ((0, 1),)),          # strings
    ([[1, 2], [True, 2]], ((0, 1),)),           # a bool is not an index
    ("1-2", ()),                                # not a list at all
])
def test_malformed_skeleton_edges_are_dropped_with_a_warning(skeleton, kept, caplog):
    category = {"name": "hand", "keypoints": ["wrist", "tip"], "skeleton": skeleton}
    with caplog.at_level(logging.WARNING, logger="dspose_graph.topology.schemas"):
        schema = KeypointSchema.from_coco_category(category, source="hand.json")
    assert schema.skeleton == kept
    assert "hand.json" in caplog.text and "'skeleton'" in caplog.text


def test_dspose_topology_on_a_crowdpose_file(tmp_path, caplog, capsys):
    ann = crowdpose_file(tmp_path / "crowdpose_train.json")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert main(["topology", "--dataset", str(ann), "--clusters", "5", "--out", str(out)]) == EXIT_OK
    assert "crowdpose_train.json" in caplog.text and str(INVALID_EDGES[0]) in caplog.text
    topo = load_topology(out / "crowdpose_train_topology.json")
    assert topo.schema.keypoints == tuple(CROWDPOSE_NAMES) and topo.num_clusters == 5
    assert len(topo.schema.skeleton) == len(COCO_SKELETON) - len(INVALID_EDGES)
    for name in ("graph.json", "mi.png", "skeleton.png"):
        assert (out / f"crowdpose_train_{name}").is_file()
    assert "5 clusters" in capsys.readouterr().out
    # Every loader reading the category goes through the same schema.
    assert get_schema(ann) == topo.schema


def _mutate(data: dict, case: str) -> None:
    ann = data["annotations"]
    if case == "short_keypoints":
        ann[3]["keypoints"] = ann[3]["keypoints"][:-3]
    elif case == "nan_keypoint":
        ann[5]["keypoints"][7] = float("nan")
    elif case == "string_keypoint":
        ann[2]["keypoints"][4] = "abc"
    elif case == "bad_bbox":
        ann[4]["bbox"] = [1, 2, 3]
    elif case == "no_keypoint_names":
        data["categories"][0]["keypoints"] = []


@pytest.mark.parametrize("case,expected", [
    ("short_keypoints", r"\(annotations\[3\]\): field 'keypoints' must be 42 finite numbers .*got 39 values"),
    ("nan_keypoint", r"\(annotations\[5\]\): field 'keypoints'\[7\] .* = nan is NaN/inf"),
    ("string_keypoint", r"\(annotations\[2\]\): field 'keypoints'\[4\] .* = 'abc' is a str, not a number"),
    ("bad_bbox", r"\(annotations\[4\]\): field 'bbox' must be 4 finite numbers"),
    ("no_keypoint_names", r"no entry of 'categories' has a 'keypoints' list"),
])
def test_bad_annotation_files_name_file_record_and_field(tmp_path, capsys, case, expected):
    path = crowdpose_file(tmp_path / "bad.json", persons=12)
    data = json.loads(path.read_text())
    _mutate(data, case)
    path.write_text(json.dumps(data))
    code = main(["topology", "--dataset", str(path), "--clusters", "3", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT
    assert err.startswith("dspose topology: error: ") and err.count("\n") == 1, err
    assert "bad.json" in err
    assert re.search(expected, err), err
    assert not (tmp_path / "out").exists(), "nothing is written when an input is bad"


@pytest.mark.parametrize("argv,expected", [
    (["--a", "0.5"], "--a 0.5 is outside"),
    (["--clusters", "0"], "clusters must be a positive integer"),
    (["--clusters", "20"], r"\[1, K=14\]"),
    (["--bins", "0"], "bins"),
])
def test_bad_options_are_refused_before_any_output(tmp_path, capsys, argv, expected):
    ann = crowdpose_file(tmp_path / "cp.json", persons=30)
    code = main(["topology", "--dataset", str(ann), "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and re.search(expected, err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["missing", "malformed"])
def test_unreadable_dataset_file_is_named(tmp_path, capsys, case):
    path = tmp_path / f"{case}.json"
    if case == "malformed":
        path.write_text('{"images": [')
    code = main(["topology", "--dataset", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and f"{case}.json" in err and err.count("\n") == 1


def test_out_naming_an_existing_file_is_an_os_error_naming_it(tmp_path, capsys):
    ann = crowdpose_file(tmp_path / "cp.json", persons=30)
    out = tmp_path / "taken"
    out.write_text("a file, not a folder")
    code = main(["topology", "--dataset", str(ann), "--clusters", "3", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == EXIT_OS and str(out) in err and "Traceback" not in err, err
    assert out.read_text() == "a file, not a folder"
