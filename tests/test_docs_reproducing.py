"""docs/reproducing.md cannot go stale: every ``dspose`` command on it runs, from a folder laid out as the page
says (generated COCO- and MPII-format data, ImageNet HRNet files of the right tensor shapes, the repository's
experiments/). Training commands run with ``--dry-run`` (``torchrun ... -m dspose_graph`` runs in this process);
``--eval-only`` commands evaluate for real, on checkpoints the test writes."""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from dspose_graph.cli.main import main
from dspose_graph.data.synthetic import generate_dataset
from dspose_graph.models.backbone import HRNetStage3

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reproducing.md"
_FENCE = re.compile(r"^\s*```")


def page_commands() -> list[tuple[int, list[str]]]:
    """``(line, argv after dspose)`` of every command in a fenced block of the page that runs dspose."""
    found, inside = [], False
    for n, line in enumerate(PAGE.read_text().splitlines(), 1):
        if _FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            continue
        words = shlex.split(line, comments=True)
        if words[:1] == ["dspose"]:
            found.append((n, words[1:]))
        elif "-m" in words and words[words.index("-m") + 1:words.index("-m") + 2] == ["dspose_graph"]:
            assert words[0] == "torchrun", f"reproducing.md:{n}: {line}"
            found.append((n, words[words.index("-m") + 2:]))
    return found


COMMANDS = page_commands()


def _backbone_file(path: Path, name: str) -> None:
    # Broadcast views of one number: the real tensor names and shapes in a file of a few kilobytes.
    shapes = HRNetStage3(name, device="meta").net.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: torch.tensor(0.01).expand(v.shape) for k, v in shapes.items()
                if not k.endswith("num_batches_tracked")}, path)


def _coco(root: Path, scratch: Path) -> None:
    """COCO 2017 layout with the person detection file (the val ground-truth boxes, scored)."""
    generate_dataset(scratch, 6, 4, image_size=(192, 256), seed=3, persons_per_image=(1, 2))
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        shutil.copy(scratch / "annotations" / f"person_keypoints_{split}.json",
                    root / "annotations" / f"person_keypoints_{split}2017.json")
        shutil.copytree(scratch / "images" / split, root / f"{split}2017")
    val = json.loads((root / "annotations" / "person_keypoints_val2017.json").read_text())
    dets = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9} for a in val["annotations"]]
    (root / "person_detection_results").mkdir()
    (root / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json").write_text(json.dumps(dets))


def _mpii(root: Path) -> None:
    """MPII layout: 4 training and 2 val persons on generated images, with their PCKh ground truth .mat."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    people = []
    for i in range(6):
        name = f"{i:09d}.jpg"
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(root / "images" / name)
        joints = np.concatenate([rng.uniform(100, 220, (16, 2)), np.ones((16, 1))], axis=1)
        people.append({"img_paths": name, "isValidation": float(i >= 4), "objpos": [160.0, 120.0],
                       "scale_provided": 0.6, "joint_self": joints.tolist(), "img_width": 320, "img_height": 240,
                       "annolist_index": float(i + 1), "people_index": 1.0})
    with gzip.open(root / "annotations" / "mpii_annotations.json.gz", "wt") as f:
        json.dump(people, f)
    val = [p for p in people if p["isValidation"]]
    scipy.io.savemat(root / "annotations" / "detections_our_format.mat", {
        "pos_gt_src": np.stack([np.asarray(p["joint_self"])[:, :2] for p in val], axis=-1),
        "jnt_missing": np.zeros((16, len(val)), np.uint8),
        "headboxes_src": np.stack([np.array([[150.0, 100.0], [170.0, 125.0]])] * len(val), axis=-1)})


@pytest.fixture(scope="module")
def pose_root(tmp_path_factory, make_checkpoint):
    """The repository root as reproducing.md expects it, in a temporary folder."""
    root = tmp_path_factory.mktemp("pose_root")
    (root / "experiments").symlink_to(ROOT / "experiments")
    _backbone_file(root / "models/pytorch/imagenet/hrnet_w32-36af842e.pth", "hrnet_w32")
    _backbone_file(root / "models/pytorch/imagenet/hrnet_w48-8ef0771d.pth", "hrnet_w48")
    _coco(root / "data" / "coco", tmp_path_factory.mktemp("generated") / "coco")
    _mpii(root / "data" / "mpii")
    make_checkpoint(root / "runs/coco_dspose_b/best.pt", "dspose_b")
    make_checkpoint(root / "runs/mpii_dspose_l/best.pt", "dspose_l")
    return root


def test_the_page_names_the_paper_runs():
    argvs = [" ".join(a) for _, a in COMMANDS]
    for row in ("coco_tokenpose_b", "coco_dspose_b", "table6_tokenpose_l", "mpii_dspose_l"):
        assert f"train experiments/{row}.yaml" in argvs, row
    assert any("--eval-only" in a for a in argvs) and any("optim.lr=" in a for a in argvs)
    assert sum(PAGE.read_text().count(f"torchrun --standalone --nproc_per_node {n} ") for n in (2, 4)) == 6


@pytest.mark.parametrize("line,argv", COMMANDS, ids=[f"reproducing.md:{n}" for n, _ in COMMANDS])
def test_documented_command_runs(pose_root, monkeypatch, capsys, line, argv):
    monkeypatch.chdir(pose_root)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    run = list(argv)
    if argv[0] == "train" and "--eval-only" not in argv and "--dry-run" not in argv:
        run.append("--dry-run")
    if argv[:2] == ["bench", "gpu"]:  # the checklist's bench, shrunk to a CPU-sized run of the same path
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        run += ["--steps", "1", "--eval-crops", "2", "--set", "optim.batch_size=2", "--set", "run.workers=0"]
        assert main(run) == 0, f"reproducing.md:{line}: `dspose {shlex.join(run)}` failed"
        assert "CUDA-less mode" in capsys.readouterr().out
        return
    assert run[0] in ("train", "experiment"), f"reproducing.md:{line}: no rule to run `dspose {shlex.join(argv)}`"
    if run[0] == "experiment":
        assert "--dry-run" in run, f"reproducing.md:{line}: experiment commands on the page must be dry runs"
    assert main(run) == 0, f"reproducing.md:{line}: `dspose {shlex.join(run)}` failed"
    out = capsys.readouterr().out
    if "--dry-run" in run and run[0] == "train":
        summary = json.loads(out)
        assert summary["pretrained"].startswith("models/pytorch/imagenet/hrnet_w")
        assert summary["codec"] == "tokenpose" and summary["val_samples"] > 0
    elif "--eval-only" in run:
        metrics = json.loads(out)
        assert ("AP" in metrics) if "coco" in argv[1] else ("PCKh_Mean" in metrics)
