"""Model cards (dspose_graph.weights.card): a shipped file without resume state, a card that describes it, and
the run summary read from epochs.csv; bad input."""

from __future__ import annotations

import hashlib

import pytest
import torch

from dspose_graph.io import read_json
from dspose_graph.models import create_model
from dspose_graph.models.checkpoint import checkpoint_state, load_checkpoint, load_model, save_checkpoint
from dspose_graph.weights.card import ship, training_summary


def _run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "epochs.csv").write_text("epoch,train_loss,lr,seconds,global_step,minutes,img_s\n"
                                    "0,0.01,0.002,60.0,10,1.0,90.0\n1,0.009,0.002,90.0,20,2.5,100.0\n")
    model = create_model("dspose_t", schema="lsp", conv="graphconv")
    state = checkpoint_state(model, name="dspose_t", epoch=2, metrics={"torso_PCK@0.2": 31.4},
                             optimizer={"state": {}}, rng={"torch": torch.get_rng_state()})
    return run, save_checkpoint(run / "best.pt", state, keep_previous=False), model


def test_training_summary_reads_steps_and_minutes(tmp_path):
    run, _, _ = _run(tmp_path)
    assert training_summary(run) == {"epochs": 2, "steps": 20, "training_minutes": 2.5, "train_img_s_median": 100.0}
    with pytest.raises(FileNotFoundError, match="epochs.csv of a finished training run"):
        training_summary(tmp_path)


def test_ship_writes_slim_weights_and_a_card_that_describes_them(tmp_path):
    run, ckpt, model = _run(tmp_path)
    metrics = {"torso_PCK@0.2": 31.44, "PCK@0.2": 78.3, "swap": 34.7, "torso_PCK@0.2/head_top": 55.55, "other": 1.0}
    card_path = ship(ckpt, "tiny_lsp", metrics=metrics, card={"data": "LSPET train", "recipe": "x.yaml"},
                     out_dir=tmp_path / "weights")
    card = read_json(card_path)
    weights = tmp_path / "weights" / "tiny_lsp.pt"
    assert card["file"] == "tiny_lsp.pt" and card["bytes"] == weights.stat().st_size
    assert card["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (card["model"], card["schema"], card["conv"], card["head"]) == ("dspose_t", "lsp", "graphconv", "dual")
    assert card["input_size"] == [96, 128] and card["data"] == "LSPET train" and card["recipe"] == "x.yaml"
    assert card["val_metrics"] == {"torso_PCK@0.2": 31.44, "PCK@0.2": 78.3, "swap": 34.7,
                                   "per_joint_torso_PCK@0.2": {"head_top": 55.5}}
    slim = load_checkpoint(weights)
    assert "optimizer" not in slim and "rng" not in slim and slim["provenance"]["shipped_as"] == "tiny_lsp"
    loaded, _ = load_model(weights)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    with pytest.raises(ValueError, match="must be a plain identifier"):
        ship(ckpt, "../evil", metrics=metrics, card={}, out_dir=tmp_path / "weights")


@pytest.mark.slow
def test_the_shipped_real_model_card_is_remade_by_its_own_command(tmp_path, data_root):
    """The card of dspose_t_lspet states val metrics; its evaluation command gives them again (same data, code)."""
    from dspose_graph.train.config import load_config
    from dspose_graph.train.pipeline import evaluate
    from dspose_graph.weights import WEIGHTS_DIR

    card = read_json(WEIGHTS_DIR / "dspose_t_lspet.json")
    assert "--eval-only --resume dspose_t_lspet" in card["commands"]["val_metrics"]
    config = load_config(WEIGHTS_DIR.parent.parent / card["recipe"])
    config.data.root = str(data_root / "lspet")
    config.run.out_dir = str(tmp_path / "eval")
    metrics = evaluate(config, "dspose_t_lspet")
    for key in ("torso_PCK@0.2", "PCK@0.2", "swap", "AP"):
        assert metrics[key] == pytest.approx(card["val_metrics"][key], abs=0.006 if key == "AP" else 0.06), key
    assert card["val_metrics"]["torso_persons"] == metrics["torso_persons"] == 362
