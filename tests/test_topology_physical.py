"""Physical topology: MI estimators, spectral clustering, the paper's MPII partition on real data, the
MPII -> COCO mapping, A_p values, topology files and every bad input."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

from dspose_graph.topology.annotations import load_coco_statistics, load_mpii_statistics
from dspose_graph.topology.build import build_mpii, build_topology, compare_with_shipped
from dspose_graph.topology.files import PhysicalTopology, load_topology, save_topology
from dspose_graph.io import sha256_file
from dspose_graph.topology.mapping import canonical_name, map_clusters
from dspose_graph.topology.physical import (cluster_mi, eigengap, joint_variables, mi_binned, mi_gaussian, mi_ksg, mutual_information,
                               normalize_mi, physical_mi, spectral_clustering)
from dspose_graph.topology.schemas import COCO17, LSP14, MPII16, KeypointSchema, infer_flip_pairs


def partition(labels) -> set[frozenset[int]]:
    labels = np.asarray(labels)
    return {frozenset(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)}


def named(schema: KeypointSchema, groups) -> set[frozenset[str]]:
    return {frozenset(schema.keypoints[i] for i in g) for g in groups}


PAPER_MPII = {
    frozenset({"head_top", "upper_neck", "thorax"}), frozenset({"l_wrist", "l_elbow", "l_shoulder"}),
    frozenset({"r_wrist", "r_elbow", "r_shoulder"}), frozenset({"l_knee", "l_ankle"}),
    frozenset({"r_knee", "r_ankle"}), frozenset({"l_hip", "r_hip", "pelvis"}),
}
PAPER_COCO = {
    frozenset({"nose", "left_eye", "right_eye", "left_ear", "right_ear"}), frozenset({"left_shoulder", "right_shoulder"}),
    frozenset({"left_elbow", "right_elbow", "left_wrist", "right_wrist"}), frozenset({"left_hip", "right_hip"}),
    frozenset({"left_knee", "right_knee", "left_ankle", "right_ankle"}),
}


@pytest.fixture(scope="session")
def mpii_stats(mpii_annotations):
    return load_mpii_statistics(mpii_annotations, split="train")


@pytest.fixture(scope="session")
def mpii_topology(mpii_annotations):
    return build_mpii(mpii_annotations)


# ---------------------------------------------------------------- the paper's partition on real MPII


def test_real_mpii_train_split_and_missing_joints(mpii_annotations, mpii_stats):
    assert mpii_stats.num_persons == 22246
    everyone = load_mpii_statistics(mpii_annotations, split="trainval")
    # Manifest: 27,001 of 403,264 joints are [0, 0, 0] (not annotated); they must never enter the MI.
    assert everyone.annotated.size == 403264 and int((~everyone.annotated).sum()) == 27001
    assert int((~mpii_stats.annotated).sum()) == 23913
    x, valid = joint_variables(mpii_stats)
    assert np.array_equal(valid, mpii_stats.annotated) and np.isfinite(x[valid]).all()


def test_real_mpii_gives_exactly_the_papers_six_clusters(mpii_topology):
    assert named(MPII16, mpii_topology.groups) == PAPER_MPII
    assert mpii_topology.same_partition(MPII16.group_labels())
    p = mpii_topology.provenance
    assert p["parameters"]["estimator"] == "binned" and p["parameters"]["variable"] == "position"
    assert p["parameters"]["persons"] == 22246 and p["parameters"]["num_clusters"] == 6


@pytest.mark.parametrize("bins", [8, 10, 12])
@pytest.mark.parametrize("seed", [0, 1])
def test_partition_is_stable_across_bins_and_seeds(mpii_stats, bins, seed):
    mi = physical_mi(mpii_stats, bins=bins)
    labels = spectral_clustering(mi, 6, seed=seed)
    assert named(MPII16, partition(labels)) == PAPER_MPII


def test_obvious_alternatives_do_not_give_the_paper_partition(mpii_stats):
    # Documented in docs/topology.md: these variables/estimators split differently on the same data.
    for kwargs in ({"variable": "visibility"}, {"variable": "root_offset"}, {"estimator": "gaussian"}):
        labels = spectral_clustering(physical_mi(mpii_stats, **kwargs), 6)
        assert named(MPII16, partition(labels)) != PAPER_MPII, kwargs


def test_shipped_mpii_topology_is_what_the_raw_data_gives(mpii_annotations, mpii_topology):
    shipped = load_topology("mpii")
    assert shipped.provenance["source_sha256"] == sha256_file(mpii_annotations)
    assert shipped.same_partition(mpii_topology)
    np.testing.assert_allclose(shipped.mi, mpii_topology.mi, atol=1e-6)
    # The shipped (rounded) MI alone clusters into the same six groups: a clone without data still works.
    assert named(MPII16, partition(cluster_mi(shipped.mi, "auto", default=6))) == PAPER_MPII
    cmp = compare_with_shipped(mpii_topology)
    assert cmp["same_partition"] and cmp["same_source"] and cmp["max_abs_mi_difference"] < 1e-6


def test_build_without_raw_data_clusters_the_shipped_mi(tmp_path, monkeypatch):
    monkeypatch.setenv("DSPOSE_DATA", str(tmp_path))
    topo = build_topology("mpii")
    assert topo.provenance["parameters"]["from_shipped_mi"] is True
    assert named(MPII16, topo.groups) == PAPER_MPII
    coco = build_topology("coco")
    assert named(COCO17, coco.groups) == PAPER_COCO and coco.mi is not None


# ---------------------------------------------------------------- MPII -> COCO mapping


def test_mapping_rule_turns_the_mpii_clusters_into_cocos_five_groups(mpii_topology):
    assert named(COCO17, partition(map_clusters(MPII16, MPII16.group_labels(), COCO17))) == PAPER_COCO
    assert named(COCO17, partition(map_clusters(MPII16, mpii_topology.labels, COCO17))) == PAPER_COCO
    assert named(COCO17, load_topology("coco").groups) == PAPER_COCO
    assert canonical_name("left_knee") == "l_knee" and canonical_name("Right_Eye") == "r_eye"


def test_mapping_rule_gives_lsp_its_four_groups(mpii_topology):
    # LSP lacks MPII's thorax and pelvis: the shoulders stand in for the thorax (joining head top and neck),
    # the hips for the pelvis; mirror clusters merge. The LSP14 schema's groups are exactly this result.
    expected = {frozenset({"head_top", "upper_neck", "r_shoulder", "l_shoulder"}),
                frozenset({"r_elbow", "r_wrist", "l_elbow", "l_wrist"}), frozenset({"r_hip", "l_hip"}),
                frozenset({"r_knee", "r_ankle", "l_knee", "l_ankle"})}
    assert named(LSP14, partition(map_clusters(MPII16, mpii_topology.labels, LSP14))) == expected
    assert named(LSP14, LSP14.groups) == expected
    assert LSP14.flip_pairs == infer_flip_pairs(LSP14.keypoints)


def test_mapping_of_a_coarser_source_partition_follows_the_rules():
    # All-one-cluster MPII: every matched COCO joint lands in one group, the face in another.
    labels = map_clusters(MPII16, np.zeros(16, dtype=int), COCO17)
    assert named(COCO17, partition(labels)) == {frozenset(COCO17.keypoints[:5]), frozenset(COCO17.keypoints[5:])}
    other = KeypointSchema("x", ("a", "b"), (), ())
    with pytest.raises(ValueError, match="share no joint names"):
        map_clusters(MPII16, MPII16.group_labels(), other)
    with pytest.raises(ValueError, match="shape"):
        map_clusters(MPII16, np.zeros(3), COCO17)


def test_direct_route_on_coco_format_files(coco_mini, data_root):
    for path in (coco_mini / "annotations" / "person_keypoints_train.json", data_root / "mmpose_fixtures" / "coco" / "test_coco.json"):
        topo = build_topology(str(path))
        assert topo.schema == COCO17 and topo.num_clusters == 5 and topo.mi.shape == (17, 17)
        assert topo.provenance["source_sha256"] == sha256_file(path)
        assert sorted(i for g in topo.groups for i in g) == list(range(17))
    stats = load_coco_statistics(coco_mini / "annotations" / "person_keypoints_train.json")
    assert stats.num_persons == 86 and stats.annotated.any(axis=1).all()  # manifest: 86 anns with keypoints


# ---------------------------------------------------------------- estimators and clustering, golden values


def test_binned_mi_matches_a_per_pair_histogram_reference():
    rng = np.random.default_rng(0)
    n = 3000
    a = rng.normal(size=(n, 2))
    x = np.stack([a, a + 0.5 * rng.normal(size=(n, 2)), rng.normal(size=(n, 2))], axis=1)
    valid = rng.random((n, 3)) > 0.1
    mi = mi_binned(x, valid, bins=4)
    assert np.array_equal(np.diag(mi), np.zeros(3))
    for i in range(3):
        for j in range(3):
            if i == j:
                continue
            m = valid[:, i] & valid[:, j]
            codes = []
            for k in (i, j):
                qs = [np.quantile(x[valid[:, k], k, c], np.linspace(0, 1, 5)[1:-1]) for c in range(2)]
                codes.append(np.searchsorted(qs[0], x[m, k, 0], side="right") * 4 + np.searchsorted(qs[1], x[m, k, 1], side="right"))
            h = np.histogram2d(codes[0], codes[1], bins=16, range=[[0, 16], [0, 16]])[0] / m.sum()
            pi, pj = h.sum(1, keepdims=True), h.sum(0, keepdims=True)
            nz = h > 0
            assert mi[i, j] == pytest.approx((h[nz] * np.log(h[nz] / (pi @ pj)[nz])).sum(), abs=1e-10)
    # Independent pair: only the plug-in bias, about (15 * 15) / (2 * 2430) = 0.046 nats.
    assert mi[0, 1] > 0.3 and mi[0, 2] < 0.08


def test_identical_variables_carry_log_bins_nats_and_gaussian_ksg_match_theory():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4000, 1))
    x = np.stack([a, a], axis=1)
    assert mi_binned(x, np.ones((4000, 2), bool), bins=8)[0, 1] == pytest.approx(math.log(8), abs=1e-9)
    rho = 0.8
    b = rho * a + math.sqrt(1 - rho**2) * rng.normal(size=(4000, 1))
    xy = np.stack([a, b], axis=1)
    truth = -0.5 * math.log(1 - rho**2)
    assert mi_gaussian(xy, np.ones((4000, 2), bool))[0, 1] == pytest.approx(truth, abs=0.03)
    assert mi_ksg(xy, np.ones((4000, 2), bool), k=3)[0, 1] == pytest.approx(truth, abs=0.05)


def test_spectral_clustering_and_eigengap_recover_planted_blocks():
    blocks = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    w = np.where(np.equal.outer(blocks, blocks), 0.9, 0.05)
    perm = np.random.default_rng(3).permutation(9)
    w = w[np.ix_(perm, perm)]
    truth = np.asarray(blocks)[perm]
    assert eigengap(w) == 3
    labels = spectral_clustering(w, 3, seed=5)
    assert partition(labels) == partition(truth)
    assert np.array_equal(labels, spectral_clustering(w, 3, seed=5))
    assert labels[0] == 0  # canonical numbering: the cluster of keypoint 0 is cluster 0


def test_normalised_mi_is_in_unit_interval_with_unit_diagonal(mpii_topology):
    mi = mpii_topology.mi
    assert mi.min() >= 0 and mi.max() == 1 and np.array_equal(np.diag(mi), np.ones(16))
    off = mi[~np.eye(16, dtype=bool)]
    assert off.max() == pytest.approx(1.0) and np.allclose(mi, mi.T)


# ---------------------------------------------------------------- A_p (Eq. 4)


@pytest.mark.parametrize("a", [0.75, 0.9, 0.99])
def test_physical_adjacency_values(mpii_topology, a):
    ap = mpii_topology.adjacency(a)
    same = np.equal.outer(mpii_topology.labels, mpii_topology.labels)
    assert ap.dtype == np.float32 and ap.shape == (16, 16)
    np.testing.assert_allclose(ap[same], 1.0, atol=1e-6)
    np.testing.assert_allclose(ap[~same], 1.0 - a, atol=1e-6)
    assert int(same.sum()) == 4 * 3**2 + 2 * 2**2  # four clusters of 3 joints, two of 2


@pytest.mark.parametrize("a", [0.7, 1.0, 0.5, 1.2])
def test_a_out_of_range_is_rejected(mpii_topology, a):
    with pytest.raises(ValueError, match=r"\(0.7, 1\)"):
        mpii_topology.adjacency(a)


# ---------------------------------------------------------------- topology files


def test_topology_file_round_trip_and_atomic_failure(tmp_path, mpii_topology):
    path = save_topology(mpii_topology, tmp_path / "t.json")
    again = load_topology(path)
    assert again.schema == MPII16 and np.array_equal(again.labels, mpii_topology.labels)
    np.testing.assert_allclose(again.mi, mpii_topology.mi, atol=1e-6)
    assert again.provenance == json.loads(json.dumps(mpii_topology.provenance))
    for key in ("source_sha256", "version", "created"):
        assert key in again.provenance
    bad = PhysicalTopology(MPII16, mpii_topology.labels, None, {"not_json": object()})
    with pytest.raises(TypeError):
        save_topology(bad, tmp_path / "bad.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]


def test_bad_topology_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_topology(tmp_path / "none.json")
    (tmp_path / "m.json").write_text("{")
    with pytest.raises(ValueError, match="malformed JSON"):
        load_topology(tmp_path / "m.json")
    (tmp_path / "f.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="format"):
        load_topology(tmp_path / "f.json")
    d = load_topology("coco").to_dict()
    d["labels"] = d["labels"][:5]
    (tmp_path / "l.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"l.json.*labels"):
        load_topology(tmp_path / "l.json")
    with pytest.raises(ValueError, match="normalised"):
        PhysicalTopology(MPII16, np.zeros(16), np.full((16, 16), 2.0))


# ---------------------------------------------------------------- bad raw input


def _write_mpii(tmp_path: Path, records: list[dict], name: str = "mpii.json.gz") -> Path:
    path = tmp_path / name
    with gzip.open(path, "wt") as f:
        json.dump(records, f)
    return path


def _record(joints=None, **extra) -> dict:
    rng = np.random.default_rng(len(extra))
    joints = rng.uniform(100, 300, size=(16, 3)).round().tolist() if joints is None else joints
    return {"img_paths": "a.jpg", "isValidation": 0.0, "joint_self": joints, "objpos": [200.0, 200.0], "scale_provided": 1.0, **extra}


def test_bad_mpii_inputs_name_file_record_and_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json.gz"):
        load_mpii_statistics(tmp_path / "missing.json.gz")
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(ValueError, match="broken.json: malformed JSON"):
        load_mpii_statistics(broken)
    short = _write_mpii(tmp_path, [_record(), _record(joints=[[1.0, 2.0, 1.0]] * 15)], "short.json.gz")
    with pytest.raises(ValueError, match=r"short.json.gz: record 1: field 'joint_self'.*\(16, 3\)"):
        load_mpii_statistics(short)
    nan = _write_mpii(tmp_path, [_record(), _record(joints=[[float("nan"), 2.0, 1.0]] * 16)], "nan.json.gz")
    with pytest.raises(ValueError, match="nan.json.gz: record 1: field 'joint_self' has NaN"):
        load_mpii_statistics(nan)
    invisible = _write_mpii(tmp_path, [_record(joints=[[0.0, 0.0, 0.0]] * 16)] * 3, "zero.json.gz")
    with pytest.raises(ValueError, match="zero.json.gz: all 3 persons have every joint unannotated"):
        load_mpii_statistics(invisible)
    no_scale = _write_mpii(tmp_path, [{k: v for k, v in _record().items() if k != "scale_provided"}], "noscale.json.gz")
    with pytest.raises(ValueError, match=r"record 0: missing field\(s\) \['scale_provided'\]"):
        load_mpii_statistics(no_scale)
    with pytest.raises(ValueError, match="split must be one of"):
        load_mpii_statistics(short, split="test")
    with pytest.raises(ValueError, match="split 'all' is now called 'trainval'"):
        load_mpii_statistics(short, split="all")


def test_bad_coco_inputs(tmp_path, coco_mini):
    data = json.loads((coco_mini / "annotations" / "person_keypoints_val.json").read_text())
    anns = [a for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
    wrong = dict(data, annotations=[dict(anns[0], keypoints=anns[0]["keypoints"][:48])])
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    with pytest.raises(ValueError, match=r"wrong.json: annotation id \d+ \(annotations\[0\]\): field 'keypoints' must be 51 finite numbers .*got 48"):
        load_coco_statistics(tmp_path / "wrong.json")
    nan_kp = list(anns[1]["keypoints"])
    nan_kp[0] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(dict(data, annotations=[anns[0], dict(anns[1], keypoints=nan_kp)])))
    with pytest.raises(ValueError, match=r"nan.json: annotation id \d+ \(annotations\[1\]\): field 'keypoints'\[0\] .*= nan is NaN/inf"):
        load_coco_statistics(tmp_path / "nan.json")
    (tmp_path / "none.json").write_text(json.dumps(dict(data, annotations=[])))
    with pytest.raises(ValueError, match="no non-crowd annotation has keypoints"):
        load_coco_statistics(tmp_path / "none.json")


def test_clusters_and_estimator_arguments_are_validated(mpii_stats):
    mi = load_topology("mpii").mi
    with pytest.raises(ValueError, match=r"clusters must be an integer in \[1, K=16\], got 17"):
        spectral_clustering(mi, 17)
    with pytest.raises(ValueError, match="clusters must be a positive integer"):
        build_topology("mpii", clusters="many")
    with pytest.raises(ValueError, match="clusters must be a positive integer"):
        build_topology("mpii", clusters=0)
    with pytest.raises(ValueError, match="unknown dataset"):
        build_topology("crowdpose")
    x, valid = joint_variables(mpii_stats)
    with pytest.raises(ValueError, match="unknown MI estimator 'mine'; valid"):
        mutual_information(x, valid, "mine")
    with pytest.raises(ValueError, match="unknown joint variable"):
        joint_variables(mpii_stats, "depth")
    with pytest.raises(ValueError, match=r"\['r_ankle'\] are observed in fewer than 2"):
        mutual_information(x, valid & (np.arange(16) != 0), names=MPII16.keypoints)
    with pytest.raises(ValueError, match="zero between every pair"):
        normalize_mi(np.zeros((4, 4)))
    with pytest.raises(FileNotFoundError):
        build_topology("mpii", annotations="/nonexistent/mpii.json.gz")
