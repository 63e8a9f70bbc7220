"""The trainer on real images (coco_mini): the loss goes down, NaN stops cleanly, bad checkpoints are refused."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import Dataset, Subset

from dspose_graph.data.coco import CocoKeypointDataset
from dspose_graph.models import create_model
from dspose_graph.models.checkpoint import load_checkpoint
from dspose_graph.train.config import EvalConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from dspose_graph.train.logs import read_csv
from dspose_graph.train.trainer import (NonFiniteLossError, Trainer, cuda_defaults, heatmap_mse_loss, load_scaler_state,
                                       make_optimizer)


def _coco_train(coco_mini, model, n: int, augment: bool = False) -> Dataset:
    ds = CocoKeypointDataset(coco_mini / "annotations" / "person_keypoints_train.json", coco_mini / "images" / "train",
                             input_size=model.input_size, heatmap_size=model.heatmap_size, train=augment)
    return Subset(ds, list(range(n)))


def _config(out_dir, model: str = "dspose_t", eval_every: int = 0, **kw) -> TrainConfig:
    """A small deterministic run; ``kw`` are OptimConfig or RunConfig fields."""
    optim = dict(epochs=1, batch_size=4, lr=1e-3, milestones=[])
    run = dict(out_dir=str(out_dir), seed=0, deterministic=True, workers=0, log_every=1, progress=False,
               tensorboard=False)
    for key, value in kw.items():
        (optim if key in OptimConfig.__dataclass_fields__ else run)[key] = value
    return TrainConfig(model=ModelConfig(name=model), optim=OptimConfig(**optim), run=RunConfig(**run),
                       eval=EvalConfig(every=eval_every))


def test_heatmap_loss_ignores_zero_weight_keypoints():
    pred = torch.zeros(1, 2, 4, 4)
    target = torch.zeros(1, 2, 4, 4)
    target[0, 1] = 5.0
    assert heatmap_mse_loss(pred, target, torch.tensor([[1.0, 0.0]])).item() == 0.0
    assert heatmap_mse_loss(pred, target, torch.tensor([[1.0, 1.0]])).item() == pytest.approx(0.5 * 25 / 2)


def test_few_iterations_on_real_images_lower_the_loss(coco_mini, tmp_path):
    torch.manual_seed(0)
    model = create_model("dspose_t")
    data = _coco_train(coco_mini, model, 8)
    trainer = Trainer(model, data, _config(tmp_path, epochs=6, batch_size=8, lr=2e-3))
    summary = trainer.fit()
    losses = [float(r["loss"]) for r in read_csv(tmp_path / "steps.csv")]
    assert len(losses) == 6 and summary.global_step == 6
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0], losses
    assert (tmp_path / "loss_curve.png").stat().st_size > 0
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 6 and state["model"]["name"] == "dspose_t" and state["schema"]["name"] == model.schema.name
    # The checkpoint rebuilds the same model.
    from dspose_graph.models import create_model_from_config, load_state_dict_checked

    again = create_model_from_config(state["model"]["config"])
    load_state_dict_checked(again, state["state_dict"], source="last.pt")
    x = torch.randn(1, 3, model.input_size[1], model.input_size[0])
    model.eval(), again.eval()
    assert torch.allclose(model(x), again(x))


class _PoisonedTargets(Dataset):
    """Real samples, except that from ``start`` on the heatmap targets are NaN (a corrupt label file)."""

    def __init__(self, base: Dataset, start: int) -> None:
        self.base, self.start = base, start

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        sample = self.base[i]
        if i >= self.start:
            sample["heatmap"] = torch.full_like(sample["heatmap"], float("nan"))
        return sample


def test_nan_loss_stops_and_keeps_last_good_checkpoint(coco_mini, tmp_path):
    torch.manual_seed(0)
    model = create_model("dspose_t")
    # A good checkpoint from clean data, then training resumed on data whose targets turned NaN.
    clean = _coco_train(coco_mini, model, 8)
    Trainer(model, clean, _config(tmp_path, epochs=1, checkpoint_every=1)).fit()
    good = load_checkpoint(tmp_path / "last.pt")
    assert good["global_step"] == 2
    poisoned = _PoisonedTargets(clean, start=0)
    trainer = Trainer(create_model("dspose_t"), poisoned, _config(tmp_path, epochs=2, checkpoint_every=1))
    with pytest.raises(NonFiniteLossError, match=r"loss became nan.*last\.pt"):
        trainer.fit(resume=tmp_path / "last.pt")
    after = load_checkpoint(tmp_path / "last.pt")
    assert after["global_step"] == good["global_step"]
    for k, v in good["state_dict"].items():
        assert torch.equal(v, after["state_dict"][k]), k


def test_resume_refuses_checkpoint_of_another_keypoint_count(coco_mini, tmp_path):
    torch.manual_seed(0)
    model = create_model("dspose_t")
    Trainer(model, _coco_train(coco_mini, model, 4), _config(tmp_path)).fit()
    mpii_model = create_model("dspose_t", schema="mpii")
    trainer = Trainer(mpii_model, _coco_train(coco_mini, model, 4), _config(tmp_path / "b"))
    with pytest.raises(ValueError, match=r"last\.pt.*K=17.*K=16"):
        trainer.resume(tmp_path / "last.pt")


def test_resume_refuses_checkpoint_of_another_model(coco_mini, tmp_path):
    torch.manual_seed(0)
    model = create_model("dspose_t")
    Trainer(model, _coco_train(coco_mini, model, 4), _config(tmp_path)).fit()
    other = create_model("tokenpose_t")
    trainer = Trainer(other, _coco_train(coco_mini, other, 4), _config(tmp_path / "b", model="tokenpose_t"))
    with pytest.raises(ValueError, match=r"last\.pt.*'dspose_t'.*'tokenpose_t'"):
        trainer.resume(tmp_path / "last.pt")


def test_bad_settings_are_refused(coco_mini, tmp_path):
    model = create_model("dspose_t")
    data = _coco_train(coco_mini, model, 4)
    with pytest.raises(ValueError, match=r"optim.precision=.none.: expected one of fp32, bf16, fp16, auto"):
        Trainer(model, data, _config(tmp_path, precision="none"))
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        Trainer(model, data, _config(tmp_path, precision="fp16"), device="cpu")


def test_bf16_autocast_trains_on_cpu(coco_mini, tmp_path):
    torch.manual_seed(0)
    model = create_model("dspose_t")
    summary = Trainer(model, _coco_train(coco_mini, model, 4), _config(tmp_path, precision="bf16")).fit()
    assert summary.global_step == 1 and math.isfinite(summary.history[0]["train_loss"])


def test_best_checkpoint_breaks_ap_ties_by_pck(coco_mini, tmp_path):
    torch.manual_seed(0)
    model = create_model("dspose_t")
    scores = iter([{"AP": 0.0, "PCK@0.2": 30.0}, {"AP": 0.0, "PCK@0.2": 45.0}, {"AP": 0.0, "PCK@0.2": 40.0}])
    trainer = Trainer(model, _coco_train(coco_mini, model, 4), _config(tmp_path, epochs=3, eval_every=1),
                      evaluate=lambda m: dict(next(scores)))
    trainer.fit()
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == 2 and best["best_key"] == [0.0, 45.0]
    assert load_checkpoint(tmp_path / "last.pt")["best_key"] == [0.0, 45.0]


def test_losses_read_every_log_interval_equal_the_per_step_mean(coco_mini, tmp_path):
    def run(out, log_every):
        torch.manual_seed(0)
        model = create_model("dspose_t")
        Trainer(model, _coco_train(coco_mini, model, 14), _config(out, epochs=2, batch_size=2, log_every=log_every,
                                                                   milestones=[1])).fit()
        return read_csv(out / "steps.csv")

    every = run(tmp_path / "every", 1)  # the old way: one row (and one host wait) per step
    per_step = [float(r["loss"]) for r in every]
    assert len(per_step) == 14
    rows = run(tmp_path / "three", 3)
    # Rows at steps 3 and 6, the end of epoch 1 (7), then 9, 12 and the end of epoch 2 (14).
    assert [int(r["global_step"]) for r in rows] == [3, 6, 7, 9, 12, 14]
    start = 0
    for r in rows:
        end = int(r["global_step"])
        assert float(r["loss"]) == pytest.approx(sum(per_step[start:end]) / (end - start), rel=1e-12, abs=0)
        assert r["lr"] == every[end - 1]["lr"] and r["step"] == every[end - 1]["step"]
        start = end


class _PoisonAfter(Dataset):
    """Real samples; from the ``after``-th read on (workers=0 reads in step order) the heatmap targets are NaN."""

    def __init__(self, base: Dataset, after: int) -> None:
        self.base, self.after, self.reads = base, after, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        sample = self.base[i]
        self.reads += 1
        if self.reads > self.after:
            sample["heatmap"] = torch.full_like(sample["heatmap"], float("nan"))
        return sample


def test_nan_at_step_k_stops_at_the_next_read_and_keeps_the_last_checkpoint(coco_mini, tmp_path):
    torch.manual_seed(0)
    model = create_model("dspose_t")
    # 4 steps of 2 per epoch; losses read at steps 3, 4 (epoch end), 6...; checkpoints only at epoch ends.
    # Step 6 (epoch 2, step 2) is the first with NaN targets: training must stop at the read after step 6.
    data = _PoisonAfter(_coco_train(coco_mini, model, 8), after=5 * 2)
    trainer = Trainer(model, data, _config(tmp_path, epochs=3, batch_size=2, log_every=3))
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at global step 6 \(found at global step 6.*last\.pt"):
        trainer.fit()
    assert trainer.global_step == 6
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["global_step"] == 4 and state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert [int(r["global_step"]) for r in read_csv(tmp_path / "steps.csv")] == [3, 4]
    # A NaN inside the interval (step 5, read at 6) names step 5.
    torch.manual_seed(0)
    model = create_model("dspose_t")
    data = _PoisonAfter(_coco_train(coco_mini, model, 8), after=4 * 2)
    with pytest.raises(NonFiniteLossError, match=r"at global step 5 \(found at global step 6"):
        Trainer(model, data, _config(tmp_path / "b", epochs=3, batch_size=2, log_every=3)).fit()


def test_persistent_workers_give_the_same_losses_as_loading_in_process(coco_mini, tmp_path):
    # The DataLoader is built once and its worker keeps its dataset copy across epochs: each sample's epoch
    # must reach the worker (the augmentation differs per epoch) or epoch 2 would repeat epoch 1's crops.
    def run(out, workers):
        torch.manual_seed(0)
        model = create_model("dspose_t")
        trainer = Trainer(model, _coco_train(coco_mini, model, 4, augment=True),
                          _config(out, epochs=2, batch_size=2, workers=workers))
        loader = trainer.loader
        trainer.fit()
        assert trainer.loader is loader
        return [r["loss"] for r in read_csv(out / "steps.csv")]

    assert run(tmp_path / "w1", 1) == run(tmp_path / "w0", 0)


def test_evaluation_runs_without_the_training_workers_alive(coco_mini, tmp_path):
    # One set of workers per rank at a time: the persistent training workers are stopped before evaluation
    # (which starts its own) and start again with the next epoch.
    import gc
    import multiprocessing

    gc.collect()
    # Earlier tests' trainers can still hold persistent workers (reference cycles; torch 2.3 keeps them past a
    # gc.collect()): only the processes this trainer starts are counted.
    before = {p.pid for p in multiprocessing.active_children()}
    alive: list[int] = []

    def evaluate(model):
        alive.append(len({p.pid for p in multiprocessing.active_children()} - before))
        return {"AP": 0.0}

    torch.manual_seed(0)
    model = create_model("dspose_t")
    trainer = Trainer(model, _coco_train(coco_mini, model, 4), _config(tmp_path, epochs=2, batch_size=2, workers=1,
                                                                       eval_every=1), evaluate=evaluate)
    assert trainer.fit().global_step == 4
    assert alive == [0, 0]


def test_the_last_partial_batch_is_trained_as_official_tokenpose_does(coco_mini, tmp_path):
    # 5 samples in batches of 2: steps of 2, 2 and 1 (official's DataLoader keeps the last partial batch).
    class Counted(Dataset):
        def __init__(self, base: Dataset) -> None:
            self.base, self.read = base, []

        def __len__(self) -> int:
            return len(self.base)

        def __getitem__(self, i):
            self.read.append(i)
            return self.base[i]

    torch.manual_seed(0)
    model = create_model("dspose_t")
    data = Counted(_coco_train(coco_mini, model, 5))
    trainer = Trainer(model, data, _config(tmp_path, epochs=2, batch_size=2))
    summary = trainer.fit()
    assert trainer.steps_per_epoch == 3 and summary.global_step == 6
    assert len(read_csv(tmp_path / "steps.csv")) == 6
    assert sorted(data.read[:5]) == sorted(data.read[5:]) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="cannot be split"):
        Trainer(model, Subset(data, []), _config(tmp_path / "empty"))


def test_cuda_defaults_and_fused_adam(monkeypatch):
    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        cuda_defaults(torch.device("cpu"), deterministic=False)
        assert not torch.backends.cuda.matmul.allow_tf32  # nothing changes off CUDA
        cuda_defaults(torch.device("cuda", 1), deterministic=False)
        assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32
        cuda_defaults(torch.device("cuda", 1), deterministic=True)
        assert not torch.backends.cudnn.benchmark
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = saved
    layer = torch.nn.Linear(2, 2)
    assert not make_optimizer(layer, 1e-3, 0.0, torch.device("cpu")).defaults["fused"]
    # Training on CUDA asks for the fused kernel; these parameters are on the CPU, which has one from torch 2.4 on
    # (2.3 refuses fused=True there): fused exactly where this torch accepts it, the default Adam elsewhere.
    try:
        torch.optim.Adam(layer.parameters(), fused=True)
        fused_here = True
    except RuntimeError as e:
        assert "fused=True" in str(e)
        fused_here = False
    optimizer = make_optimizer(layer, 1e-3, 0.0, torch.device("cuda", 0))
    assert bool(optimizer.defaults["fused"]) is fused_here
    layer(torch.ones(1, 2)).sum().backward()
    before = layer.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(layer.weight, before)


def test_resume_with_fp16_from_a_run_without_loss_scaling_starts_a_fresh_scaler(caplog):
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # stands in for CUDA's: same state handling
    with caplog.at_level("INFO"):
        load_scaler_state(scaler, torch.amp.GradScaler("cpu", enabled=False).state_dict(), "bf16.pt")
    assert scaler.get_scale() == 1024.0 and "bf16.pt was trained without fp16 loss scaling" in caplog.text
    fp16 = torch.amp.GradScaler("cpu", init_scale=8.0)
    load_scaler_state(scaler, fp16.state_dict(), "fp16.pt")
    assert scaler.get_scale() == 8.0
    off = torch.amp.GradScaler("cpu", enabled=False)
    load_scaler_state(off, fp16.state_dict(), "fp16.pt")  # fp16 run resumed without AMP: the scale is unused
    assert not off.is_enabled()


def test_resume_with_another_process_count(coco_mini, tmp_path):
    torch.manual_seed(0)
    model = create_model("dspose_t")
    data = _coco_train(coco_mini, model, 8)
    Trainer(model, data, _config(tmp_path, epochs=1, batch_size=2, checkpoint_every=1)).fit()
    end = load_checkpoint(tmp_path / "last.pt")
    assert end["world_size"] == 1 and end["step_in_epoch"] == 0
    mid = dict(end, world_size=2, step_in_epoch=1, epoch=0)
    torch.save(mid, tmp_path / "mid.pt")
    trainer = Trainer(create_model("dspose_t"), data, _config(tmp_path / "b", epochs=2, batch_size=2))
    with pytest.raises(ValueError, match=r"mid\.pt: checkpoint was written by 2 process\(es\) in the middle of "
                                         r"epoch 1 \(step 1\); this run has 1"):
        trainer.resume(tmp_path / "mid.pt")
    torch.save(dict(end, world_size=4), tmp_path / "boundary.pt")  # an epoch end: any process count
    trainer.resume(tmp_path / "boundary.pt")
    assert (trainer.epoch, trainer.step_in_epoch) == (1, 0)


def test_epoch_means_are_drawn_where_their_epochs_end():
    """steps.csv logs every log_every steps, so the epoch-mean points sit at each epoch's last optimiser step, not
    at (epoch + 1) x the number of logged rows per epoch."""
    from dspose_graph.train.logs import epoch_end_steps

    rows = [{"global_step": g, "epoch": (g - 1) // 282} for g in range(20, 847, 20)]  # every 20 steps
    with_steps = [{"epoch": e, "train_loss": 1.0, "global_step": (e + 1) * 282} for e in range(3)]
    assert epoch_end_steps(rows, with_steps) == [282, 564, 846]
    without = [{"epoch": e, "train_loss": 1.0} for e in range(3)]  # an older run's rows: the last logged step
    assert epoch_end_steps(rows, without) == [280, 560, 840]


def test_a_run_folders_curve_is_redrawn_from_its_csv_files(tmp_path):
    """plot_run_curve reads epochs.csv / steps.csv (strings, empty cells where no evaluation ran) and the metric
    that chose best.pt from config.yaml; a folder that is not a run, or lacks the metric, is named."""
    import shutil

    from dspose_graph.train.logs import plot_run_curve

    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(FileNotFoundError, match="epochs.csv"):
        plot_run_curve(run)
    from pathlib import Path

    shutil.copy(Path(__file__).resolve().parents[1] / "experiments/lsp/dspose_t_lspet.yaml", run / "config.yaml")  # data.kind lspet: torso PCK chooses
    (run / "steps.csv").write_text("global_step,epoch,step,loss,lr\n10,0,10,0.5,0.1\n20,1,10,0.25,0.1\n")
    (run / "epochs.csv").write_text("epoch,train_loss,global_step,minutes,torso_PCK@0.2\n0,0.5,10,1.0,\n"
                                    "1,0.25,20,2.0,40.0\n")
    out = plot_run_curve(run)
    assert out == run / "loss_curve.png" and out.stat().st_size > 0
    with pytest.raises(ValueError, match="no column 'AP'"):
        plot_run_curve(run, tmp_path / "x.png", metric="AP")


def test_epoch_log_names_the_step_budget_when_there_is_one(coco_mini, tmp_path, caplog):
    """A run bounded by optim.max_steps logs "epoch 2, step 4/5" (its epochs only bound the steps), else "epoch 2/3"."""
    torch.manual_seed(0)
    model = create_model("dspose_t")
    data = _coco_train(coco_mini, model, 4)
    with caplog.at_level("INFO", logger="dspose_graph.train.trainer"):
        trainer = Trainer(model, data, _config(tmp_path / "steps", epochs=5, max_steps=5, batch_size=2))
        trainer.fit()
    lines = [r.getMessage() for r in caplog.records if "img/s" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["epoch 1, step 2/5", "epoch 2, step 4/5", "epoch 3, step 5/5"]
    assert trainer.progress(3, bar=True) == "epoch 3 (budget 5 steps)"  # the bar counts the epoch's steps itself
    caplog.clear()
    with caplog.at_level("INFO", logger="dspose_graph.train.trainer"):
        Trainer(model, data, _config(tmp_path / "epochs", epochs=2, batch_size=2)).fit()
    lines = [r.getMessage() for r in caplog.records if "img/s" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
