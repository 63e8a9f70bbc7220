"""Validate first, write last: each input the bad-input sweep found checked late, vague or misreported ends in one
line naming the input, the field and the fix, with its exit status, and nothing is written before every input
was checked. A torn ``steps.csv`` row is skipped with a warning; SIGTERM is handled as Ctrl-C."""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from dspose_graph.cli.main import EXIT_INPUT, EXIT_OK, EXIT_OS, EXIT_TERMINATED, main, run_guarded
from dspose_graph.io import LOCK_NAME
from dspose_graph.models import create_model
from dspose_graph.models.checkpoint import load_checkpoint, save_checkpoint
from dspose_graph.predict import Predictor
from dspose_graph.process import sigterm_as_interrupt
from dspose_graph.train.logs import StepLog, plot_learning_curve

REPO = Path(__file__).resolve().parent.parent
# Two 2-sample steps and a 4-sample evaluation: the smallest run that writes every file a run writes.
TINY = ["--set", "optim.epochs=1", "--set", "optim.batch_size=2", "--set", "data.limit_train=4",
        "--set", "data.limit_val=4", "--set", "eval.flip_test=false"]


def _one_line(err: str) -> str:
    assert err.count("\n") == 1, err
    return err.strip()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, make_checkpoint) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "000000000001.jpg"), np.full((128, 96, 3), 127, np.uint8))
    return folder


# --- predict: the detection threshold with --boxes ------------------------------------------------------------

def test_det_threshold_out_of_range_with_boxes_is_refused(tmp_path, capsys, ckpt, image_dir):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 80], "score": 0.9}]))
    code = main(["predict", "--weights", str(ckpt), "--images", str(image_dir), "--boxes", str(boxes),
                 "--det-threshold", "2", "--out", str(tmp_path / "out")])
    assert code == EXIT_INPUT
    assert _one_line(capsys.readouterr().err) == ("dspose predict: error: --det-threshold must be in [0, 1] (a "
                                                  "detection score), got 2.0")
    assert not (tmp_path / "out").exists()


def test_det_threshold_that_drops_every_box_is_refused(tmp_path, capsys, ckpt, image_dir):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 80], "score": s}
                                 for s in (0.3, 0.6)]))
    code = main(["predict", "--weights", str(ckpt), "--images", str(image_dir), "--boxes", str(boxes),
                 "--det-threshold", "0.7", "--out", str(tmp_path / "out")])
    err = _one_line(capsys.readouterr().err)
    assert code == EXIT_INPUT
    assert err.endswith(f"--det-threshold 0.7 drops every one of the 2 person boxes of {boxes} (highest score "
                        "0.6); lower it"), err
    assert not (tmp_path / "out").exists()


# --- train: nothing written before the inputs are checked -----------------------------------------------------

def _finished_run(out: Path) -> dict[str, str]:
    out.mkdir(parents=True)
    files = {"config.yaml": "the finished run's config\n", "metrics.json": '{"metrics": {"AP": 0.5}}\n'}
    for name, text in files.items():
        (out / name).write_text(text)
    return files


def test_rejected_config_leaves_a_finished_runs_folder_alone(tmp_path, capsys, synthetic_coco, write_config):
    out = tmp_path / "run"
    before = _finished_run(out)
    config = write_config(tmp_path / "c.yaml", synthetic_coco, out)
    code = main(["train", str(config), *TINY, "--set", "data.train_ann=annotations/absent.json"])
    err = _one_line(capsys.readouterr().err)
    assert code == EXIT_INPUT and err.endswith(f"config data.train_ann: "
                                               f"{synthetic_coco / 'annotations' / 'absent.json'} does not exist"), err
    assert {p.name: p.read_text() for p in out.iterdir()} == before


def test_a_rejected_run_leaves_no_folder_behind(tmp_path, capsys, synthetic_coco, write_config):
    out = tmp_path / "runs" / "new"
    config = write_config(tmp_path / "c.yaml", synthetic_coco, out)
    code = main(["train", str(config), *TINY, "--set", "data.val_images=absent"])
    assert code == EXIT_INPUT and "config data.val_images: " in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


def test_a_resume_checkpoint_of_another_model_leaves_the_folder_alone(tmp_path, capsys, synthetic_coco,
                                                                      write_config, make_checkpoint):
    out = tmp_path / "run"
    before = _finished_run(out)
    other = make_checkpoint(tmp_path / "other.pt", preset="tokenpose_t")
    config = write_config(tmp_path / "c.yaml", synthetic_coco, out)
    code = main(["train", str(config), *TINY, "--resume", str(other)])
    err = _one_line(capsys.readouterr().err)
    assert code == EXIT_INPUT and "checkpoint is for model 'tokenpose_t', this run trains 'dspose_t'" in err, err
    assert {p.name: p.read_text() for p in out.iterdir()} == before


def _annotations(src: Path, dst: Path, change) -> Path:
    data = json.loads(src.read_text())
    change(data)
    dst.write_text(json.dumps(data))
    return dst


@pytest.mark.parametrize("case", ["no_annotations", "no_labelled_keypoint"])
def test_a_training_file_without_usable_persons_names_file_and_fix(tmp_path, capsys, synthetic_coco,
                                                                   write_config, case):
    def unlabel(data):
        for a in data["annotations"]:
            a["keypoints"] = [0] * len(a["keypoints"])
            a["num_keypoints"] = 0

    change = (lambda data: data.update(annotations=[])) if case == "no_annotations" else unlabel
    ann = _annotations(synthetic_coco / "annotations" / "person_keypoints_train.json", tmp_path / "train.json", change)
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", synthetic_coco, out)
    code = main(["train", str(config), *TINY, "--set", f"data.train_ann={ann}"])
    err = _one_line(capsys.readouterr().err)
    assert code == EXIT_INPUT
    assert re.search(rf"error: config data\.train_ann: {re.escape(str(ann))} has no usable person for the train "
                     r"split \(annotations skipped: (none|\d+ too_few_keypoints)\); .*labelled keypoint", err), err
    assert "cannot be split" not in err and not out.exists()


def test_run_device_gpu_in_a_config_names_the_key(tmp_path, capsys, synthetic_coco, write_config):
    config = write_config(tmp_path / "c.yaml", synthetic_coco, tmp_path / "run", device="gpu")
    code = main(["train", str(config), *TINY])
    assert code == EXIT_INPUT
    assert _one_line(capsys.readouterr().err) == (
        "dspose train: error: config run.device 'gpu' is not a torch device; use cpu, cuda or cuda:N ('gpu' is "
        "spelled 'cuda' in torch)")
    assert not (tmp_path / "run").exists()


def test_an_unknown_set_key_names_the_option(tmp_path, capsys, synthetic_coco, write_config):
    config = write_config(tmp_path / "c.yaml", synthetic_coco, tmp_path / "run")
    code = main(["train", str(config), "--set", "optim.learning_rate=1e-3"])
    err = _one_line(capsys.readouterr().err)
    assert code == EXIT_INPUT
    assert err.startswith("dspose train: error: --set optim.learning_rate=1e-3: optim: unknown key "
                          "'learning_rate' (valid keys: lr, "), err
    assert str(config) not in err


def test_experiment_checks_every_row_before_the_first_trains(tmp_path, capsys):
    code = main(["experiment", "table7", "--tiny", "--epochs", "1", "--set", "optim.batchsize=2",
                 "--out", str(tmp_path / "exp")])
    err = _one_line(capsys.readouterr().err)
    assert code == EXIT_INPUT and err.startswith("dspose experiment: error: --set optim.batchsize=2: optim: "
                                                 "unknown key 'batchsize'"), err
    assert not (tmp_path / "exp").exists()


# --- demo -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option,value,expected", [("--epochs", "-1", "--epochs -1: must be >= 1"),
                                                   ("--batch-size", "0", "--batch-size 0: must be >= 1"),
                                                   ("--conv", "gnn", "--conv gnn: unknown graph convolution; valid: dspose, gat")])
def test_demo_refuses_impossible_options_before_writing_anything(tmp_path, capsys, option, value, expected):
    code = main(["demo", "--data", "synthetic", "--train-images", "2", "--val-images", "2", option, value,
                 "--out", str(tmp_path / "demo")])
    err = _one_line(capsys.readouterr().err)
    assert code == EXIT_INPUT and err.startswith(f"dspose demo: error: {expected}"), err
    assert not (tmp_path / "demo").exists(), "no topology figure, no generated data"


# --- eval -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["no_annotations", "no_labelled_keypoint"])
def test_ground_truth_with_nothing_to_score_is_refused(tmp_path, capsys, coco_mini, case):
    gt = json.loads((coco_mini / "annotations" / "person_keypoints_val.json").read_text())
    results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
               for a in gt["annotations"] if a["num_keypoints"] > 0][:3]
    if case == "no_annotations":
        gt["annotations"] = []
    else:
        for a in gt["annotations"]:
            a["keypoints"], a["num_keypoints"] = [0] * len(a["keypoints"]), 0
    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_path.write_text(json.dumps(gt))
    pred_path.write_text(json.dumps(results))
    code = main(["eval-coco", "--pred", str(pred_path), "--annotations", str(gt_path),
                 "--out", str(tmp_path / "m.json")])
    out = capsys.readouterr()
    assert code == EXIT_INPUT and "n/a" not in out.out
    assert _one_line(out.err).startswith(f"dspose eval-coco: error: --annotations {gt_path}: no annotation to "
                                         "score against (0 of its")
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("command", ["eval-coco", "eval-mpii"])
def test_a_folder_given_for_an_input_file_is_called_a_folder(tmp_path, capsys, command):
    folder = tmp_path / "given"
    folder.mkdir()
    other = tmp_path / "other.json"
    other.write_text("[]")
    # eval-coco reads the ground truth first, eval-mpii the predictions
    argv = ["--pred", str(other), "--annotations", str(folder)] if command == "eval-coco" else \
        ["--pred", str(folder), "--gt", str(other)]
    code = main([command, *argv])
    err = _one_line(capsys.readouterr().err)
    assert code == EXIT_INPUT and f"{folder} is a folder; expected" in err and "does not exist" not in err, err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("command", ["eval-mpii", "export"])
def test_out_in_an_unwritable_place_names_the_option_not_a_temporary_file(tmp_path, capsys, ckpt, command):
    argv = (["eval-mpii", "--pred", str(tmp_path / "p.npy")] if command == "eval-mpii" else
            ["export", "onnx", "--weights", str(ckpt)])
    code = main([*argv, "--out", "/proc/x.json"])
    err = _one_line(capsys.readouterr().err)
    assert code == EXIT_OS
    assert re.fullmatch(rf"dspose {command}: error: --out /proc/x\.json: cannot create files in /proc \(.+\); "
                        "choose a writable location", err), err
    assert ".tmp" not in err


# --- weights and model inputs ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nan_ckpt(tmp_path_factory, make_checkpoint) -> Path:
    path = make_checkpoint(tmp_path_factory.mktemp("nan") / "nan.pt")
    state = load_checkpoint(path)
    weight = next(v for v in state["state_dict"].values() if v.is_floating_point() and v.numel() > 1)
    weight.view(-1)[0] = float("nan")
    return save_checkpoint(path, state, keep_previous=False)


def test_nan_weights_are_blamed_on_the_checkpoint(tmp_path, capsys, nan_ckpt, image_dir):
    with pytest.raises(ValueError, match=rf"^{re.escape(str(nan_ckpt))}: weight '.+' holds \d+ NaN/inf value"):
        Predictor(nan_ckpt)
    code = main(["predict", "--weights", str(nan_ckpt), "--images", str(image_dir), "--out", str(tmp_path / "out")])
    err = _one_line(capsys.readouterr().err)
    assert code == EXIT_INPUT and "NaN/inf value(s)" in err and "use an earlier checkpoint" in err, err
    assert "heatmaps" not in err and not (tmp_path / "out").exists()


def test_predictor_device_gpu_is_a_clear_error(ckpt):
    with pytest.raises(ValueError, match=r"^device 'gpu' is not a torch device; use cpu, cuda or cuda:N"):
        Predictor(ckpt, device="gpu")


def test_a_batch_of_zero_images_and_an_empty_image(ckpt):
    model = create_model("dspose_t")
    w, h = model.input_size
    with pytest.raises(ValueError, match=rf"a batch of 0 images \(0, 3, {h}, {w}\): pass at least one crop"):
        model(torch.zeros(0, 3, h, w))
    with pytest.raises(ValueError, match=r"^image is 0x0 pixels: there is nothing to crop a person from$"):
        Predictor(ckpt).predict(np.zeros((0, 0, 3), np.uint8))


# --- a full disk while a checkpoint is saved ------------------------------------------------------------------

SAVE_UNDER_LIMIT = """
import sys, torch
from dspose_graph.cli.main import run_guarded
from dspose_graph.models.checkpoint import save_checkpoint
state = {"model": {"name": "dspose_t", "config": {}}, "schema": {"name": "coco"}, "epoch": 2,
         "state_dict": {"w": torch.ones(1024, 1024)}}
sys.exit(run_guarded("train", lambda args: save_checkpoint(sys.argv[1], state), None))
"""


def test_a_full_disk_while_saving_a_checkpoint_names_the_file(tmp_path, marker_state, child_env):
    path = tmp_path / "last.pt"
    save_checkpoint(path, marker_state(1.0))
    limit = 1 << 20  # 1 MiB, as `ulimit -f 1024`: the 4 MiB checkpoint cannot be written

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(child_env(), PYTHONPATH=str(REPO))
    run = subprocess.run([sys.executable, "-W", "ignore::FutureWarning", "-c", SAVE_UNDER_LIMIT, str(path)], env=env, capture_output=True,
                         text=True, preexec_fn=limit_file_size)
    assert run.returncode == EXIT_OS, run.stderr
    assert re.fullmatch(rf"dspose train: error: {re.escape(str(path))}: .*(could not write the checkpoint|File too "
                        r"large).*", _one_line(run.stderr)), run.stderr
    assert load_checkpoint(path)["epoch"] == 1, "the last good checkpoint is kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"], "no temporary file is left behind"


# --- a torn steps.csv row -------------------------------------------------------------------------------------

def test_a_torn_steps_row_is_skipped_with_a_warning(tmp_path, caplog):
    steps = tmp_path / "steps.csv"
    steps.write_text("global_step,epoch,step,loss,lr\n1,0,1,0.5,0.001\n2,0,2,0.4,0.001\n3,0,3,\n")
    log = StepLog(steps, resume_step=3)
    log.write(4, 0, 4, 0.3, 1e-3)
    log.close()
    assert f"{steps}: line 4 is torn or garbled" in caplog.text
    assert steps.read_text().splitlines()[1:] == ["1,0,1,0.5,0.001", "2,0,2,0.4,0.001", "4,0,4,0.3,0.001"]
    steps.write_text(steps.read_text() + "5,0,5,0.2")  # torn again: the plot reads past it
    caplog.clear()
    plot_learning_curve(steps, [{"epoch": 0, "train_loss": 0.3}], tmp_path / "curve.png")
    assert (tmp_path / "curve.png").is_file() and "line 5 is torn or garbled" in caplog.text


@pytest.mark.slow
def test_resume_over_a_torn_steps_row_finishes_the_run(tmp_path, capsys, caplog, synthetic_coco, write_config):
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", synthetic_coco, out)
    assert main(["train", str(config), *TINY]) == EXIT_OK
    with open(out / "steps.csv", "a") as f:
        f.write("9,0,")  # a run killed in the middle of a row
    code = main(["train", str(config), *TINY, "--set", "optim.epochs=2", "--resume", str(out / "last.pt")])
    assert code == EXIT_OK, capsys.readouterr().err
    assert "is torn or garbled" in caplog.text
    assert json.loads((out / "metrics.json").read_text())["metrics"]
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    assert all(row.count(",") == 4 for row in (out / "steps.csv").read_text().splitlines())


# --- SIGTERM --------------------------------------------------------------------------------------------------

def test_sigterm_is_handled_as_ctrl_c_with_exit_143(capsys):
    def work(args: argparse.Namespace) -> int:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next line
        raise AssertionError("SIGTERM did not stop the command")

    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt():
        code = run_guarded("predict", work, argparse.Namespace())
    assert code == EXIT_TERMINATED
    assert capsys.readouterr().err == ("dspose predict: error: terminated (SIGTERM); files already written are "
                                       "complete (a training run resumes from OUT/last.pt with --resume)\n")
    assert signal.getsignal(signal.SIGTERM) is before, "the previous handler is back"


@pytest.mark.slow
def test_sigterm_during_training_exits_143_says_how_to_resume_and_resumes(coco_mini, tmp_path, write_config,
                                                                         child_env, signal_training):
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", coco_mini, out, workers=0)
    raw = yaml.safe_load(config.read_text())
    raw["optim"]["epochs"] = 1000  # still training whenever the signal arrives
    config.write_text(yaml.safe_dump(raw))
    env = dict(child_env(), PYTHONPATH=str(REPO))
    # Step 8 is in epoch 2: last.pt was written at step 7.
    code, before, rest = signal_training(config, env, signal.SIGTERM, at_step=8, cwd=REPO)
    assert code == EXIT_TERMINATED, before + rest
    last = rest.rstrip().splitlines()[-1]
    assert "Traceback" not in rest and last.startswith("dspose train: error: terminated (SIGTERM); the last good "
                                                       f"checkpoint is {out / 'last.pt'}; resume with: "), rest
    assert not (out / LOCK_NAME).exists(), "the lock is released"
    command = shlex.split(last.split("resume with: ", 1)[1])
    assert command[:2] == ["dspose", "train"]
    epochs = int(load_checkpoint(out / "last.pt")["epoch"]) + 2
    resumed = subprocess.run([sys.executable, "-m", "dspose_graph", *command[1:], "--set", f"optim.epochs={epochs}"],
                             env=env, cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == EXIT_OK, resumed.stderr
    assert load_checkpoint(out / "last.pt")["epoch"] == epochs
