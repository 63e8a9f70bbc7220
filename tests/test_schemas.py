"""Keypoint schemas: the built-in COCO-17/MPII-16 definitions and schemas read from COCO-format files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dspose_graph.topology.schemas import COCO17, MPII16, KeypointSchema, get_schema, infer_flip_pairs


def test_coco17_matches_the_real_coco_category(coco_mini):
    data = json.loads((coco_mini / "annotations" / "person_keypoints_val.json").read_text())
    cat = data["categories"][0]
    assert list(COCO17.keypoints) == cat["keypoints"]
    # The official skeleton is 1-based; ours is the same edges 0-based.
    assert sorted(COCO17.skeleton) == sorted((a - 1, b - 1) for a, b in cat["skeleton"])
    assert get_schema(coco_mini / "annotations" / "person_keypoints_val.json") is COCO17


def test_flip_index_is_an_involution_swapping_left_and_right():
    for schema in (COCO17, MPII16):
        perm = schema.flip_index
        assert np.array_equal(perm[perm], np.arange(schema.num_keypoints))
        for i, j in schema.flip_pairs:
            a, b = sorted((schema.keypoints[i], schema.keypoints[j]))
            assert a.replace("left", "right").replace("l_", "r_") == b


def test_left_and_right_are_named_by_side_not_by_pair_position():
    # MPII stores its pairs right-first (r_ankle=0, l_ankle=5).
    assert [MPII16.keypoints[i] for i in MPII16.left] == ["l_hip", "l_knee", "l_ankle", "l_shoulder", "l_elbow", "l_wrist"]
    assert all(MPII16.keypoints[i].startswith("r_") for i in MPII16.right)
    assert all(COCO17.keypoints[i].startswith("left_") for i in COCO17.left)
    assert all(COCO17.keypoints[i].startswith("right_") for i in COCO17.right)
    assert len(COCO17.left) == len(COCO17.right) == 8

    # Names that do not say the side: the pair's order decides, (left, right).
    unnamed = KeypointSchema(name="u", keypoints=("a", "b", "c"), skeleton=(), flip_pairs=((0, 2),))
    assert (unnamed.left, unnamed.right) == ((0,), (2,))


def test_mpii_order_and_flip_pairs_match_the_dataset_manifest():
    assert MPII16.keypoints[:3] == ("r_ankle", "r_knee", "r_hip") and MPII16.keypoints[9] == "head_top"
    assert MPII16.flip_pairs == ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))


@pytest.mark.parametrize("schema,n_groups", [(COCO17, 5), (MPII16, 6)])
def test_paper_groups_partition_the_keypoints(schema, n_groups):
    assert len(schema.groups) == n_groups
    labels = schema.group_labels()
    assert sorted(np.unique(labels)) == list(range(n_groups))
    assert sorted(i for g in schema.groups for i in g) == list(range(schema.num_keypoints))


def test_dict_round_trip_preserves_everything():
    for schema in (COCO17, MPII16):
        again = KeypointSchema.from_dict(json.loads(json.dumps(schema.to_dict())))
        assert again == schema


def test_custom_coco_category_gets_inferred_flip_pairs_and_zero_based_skeleton():
    cat = {"name": "hand", "keypoints": ["wrist", "left_tip", "right_tip", "centre"], "skeleton": [[1, 2], [1, 3], [1, 4]]}
    schema = KeypointSchema.from_coco_category(cat)
    assert schema.name == "hand" and schema.skeleton == ((0, 1), (0, 2), (0, 3))
    assert schema.flip_pairs == ((1, 2),) and schema.sigmas is None and schema.groups is None
    assert infer_flip_pairs(["l_a", "r_a", "l_b"]) == ((0, 1),)


@pytest.mark.parametrize("kwargs,match", [
    ({"keypoints": ("a", "a")}, "not unique"),
    ({"skeleton": ((0, 5),)}, "skeleton edge"),
    ({"sigmas": (0.1,)}, "sigmas"),
    ({"groups": ((0,),)}, "not a partition"),
])
def test_invalid_schema_is_rejected(kwargs, match):
    base = {"name": "t", "keypoints": ("a", "b"), "skeleton": (), "flip_pairs": ()}
    with pytest.raises(ValueError, match=match):
        KeypointSchema(**{**base, **kwargs})


def test_bad_category_and_schema_sources(tmp_path, caplog):
    # A bad skeleton edge is drawing metadata: dropped with a warning (tests/test_bad_input_topology.py).
    with caplog.at_level("WARNING"):
        schema = KeypointSchema.from_coco_category({"name": "x", "keypoints": ["a", "b"], "skeleton": [[0, 1], [1, 2]]})
    assert schema.skeleton == ((0, 1),) and "[0, 1]" in caplog.text
    with pytest.raises(ValueError, match="'keypoints'"):
        KeypointSchema.from_coco_category({"name": "x", "keypoints": []})
    with pytest.raises(ValueError, match="unknown schema"):
        get_schema("crowdpose")
    with pytest.raises(FileNotFoundError):
        get_schema(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="malformed JSON"):
        get_schema(bad)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"categories": [{"name": "person"}]}))
    with pytest.raises(ValueError, match="categories"):
        get_schema(empty)
    with pytest.raises(KeyError, match="nose"):
        MPII16.index("nose")
