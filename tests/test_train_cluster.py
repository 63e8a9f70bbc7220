"""What a cluster job needs from the trainer, on CPU: optimiser state in its parameters' layout (CUDA's fused Adam
check done here in Python), the config's schedule on resume, gradient accumulation, ``--resume auto``, epoch
checkpoints kept, the resume command an interrupted run prints, and a resume read by rank 0 alone (two gloo
processes)."""

from __future__ import annotations

import logging
import shlex
import shutil

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from dspose_graph.models import create_model
from dspose_graph.models.checkpoint import load_checkpoint
from dspose_graph.train.config import EvalConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig, config_from_dict
from dspose_graph.train.distributed import DistInfo
from dspose_graph.train.logs import read_csv
from dspose_graph.train.optim import layout_mismatches
from dspose_graph.train.run_folder import resume_hint
from dspose_graph.train.trainer import Trainer


class Heatmaps(Dataset):
    """``n`` seeded random crops and heatmaps of dspose_t's sizes (the loss needs no real image here)."""

    def __init__(self, n: int = 8) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(index)
        return {"image": torch.rand(3, 128, 96, generator=g), "heatmap": torch.rand(17, 32, 24, generator=g),
                "target_weight": torch.ones(17)}


def _config(out_dir, **kw) -> TrainConfig:
    """A deterministic dspose_t run on :class:`Heatmaps`; ``kw`` are OptimConfig or RunConfig fields."""
    optim = dict(epochs=1, batch_size=2, lr=1e-3, milestones=[])
    run = dict(out_dir=str(out_dir), seed=0, deterministic=True, workers=0, log_every=1, progress=False,
               tensorboard=False)
    for key, value in kw.items():
        (optim if key in OptimConfig.__dataclass_fields__ else run)[key] = value
    return TrainConfig(model=ModelConfig(name="dspose_t"), optim=OptimConfig(**optim), run=RunConfig(**run),
                       eval=EvalConfig(every=0))


@pytest.fixture
def fused_adam_check(monkeypatch):
    """Adam.step refuses parameters whose gradient or moments differ from them in layout, as CUDA's fused Adam
    ("params, grads, exp_avgs, and exp_avg_sqs must have same dtype, device, and layout"); CPU's kernel does not."""
    step = torch.optim.Adam.step

    def checked(self, *args, **kwargs):
        bad = layout_mismatches(self)
        if bad:
            raise RuntimeError(f"fused Adam: layouts differ ({len(bad)}), e.g. {bad[0]}")
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", checked)


# --- layouts --------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_channels_last_evaluation_and_resume_keep_adam_state_in_the_parameters_layout(tmp_path, synthetic_coco,
                                                                                      fused_adam_check):
    from dspose_graph.train.pipeline import train

    def config(**run):
        return config_from_dict({
            "model": {"name": "dspose_t"},
            "data": {"kind": "coco", "root": str(synthetic_coco), "train_ann": "annotations/person_keypoints_train.json",
                     "train_images": "images/train", "val_ann": "annotations/person_keypoints_val.json",
                     "val_images": "images/val", "limit_train": 8, "limit_val": 4, "augment": False},
            "optim": {"epochs": run.pop("epochs"), "batch_size": 4, "milestones": []},
            "eval": {"every": 1, "flip_test": False, "batch_size": 4, "channels_last": True},
            "run": {"out_dir": str(tmp_path / "run"), "workers": 0, "progress": False, "tensorboard": False,
                    "device": "cpu", **run}})

    # NCHW training, NHWC evaluation after epoch 1: epoch 2's steps meet the (fake) fused-Adam check.
    result = train(config(epochs=2, channels_last=False))
    assert result.epochs == 2 and all(p.is_contiguous() for p in result.model.parameters())
    # The NCHW moments of that run resumed by an NHWC run (and back): converted to the parameters' layout.
    result = train(config(epochs=3, channels_last=True), resume=tmp_path / "run" / "last.pt")
    assert result.epochs == 3 and result.global_step == 6
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in result.model.parameters())


def test_normalize_batch_copies_its_constants_to_a_device_once(monkeypatch):
    from dspose_graph.data import image

    copies = []
    to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        out = to(self, *args, **kwargs)
        if self.device.type == "cpu" and out.device.type != "cpu":
            copies.append(tuple(self.shape))
        return out

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    monkeypatch.setattr(image, "_CONSTANTS", {})
    batch = torch.zeros(2, 3, 4, 4, dtype=torch.uint8, device="meta")  # a device other than the host
    for _ in range(3):
        out = image.normalize_batch(batch)
    assert out.dtype == torch.float32 and out.device.type == "meta"
    assert copies == [(3, 1, 1), (3, 1, 1)], "scale and shift copied once, not at every step"


# --- resume ---------------------------------------------------------------------------------------------------------

def test_resume_follows_the_configs_schedule_and_refuses_another_batch_mid_epoch(tmp_path, caplog):
    torch.manual_seed(0)
    Trainer(create_model("dspose_t"), Heatmaps(4), _config(tmp_path / "a", checkpoint_every=1)).fit()
    trainer = Trainer(create_model("dspose_t"), Heatmaps(4), _config(tmp_path / "b", epochs=3, lr=5e-4,
                                                                     milestones=[1], weight_decay=1e-4))
    trainer.resume(tmp_path / "a" / "last.pt")
    # The checkpoint ran at lr 1e-3 without milestones; the config asks for 5e-4 and x0.1 after epoch 1.
    group = trainer.optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(5e-5) and group["weight_decay"] == 1e-4
    assert trainer.scheduler.get_last_lr() == [pytest.approx(5e-5)]
    assert "optim.lr 0.001 -> 0.0005, optim.milestones [] -> [1]" in caplog.text
    assert "lr 5e-05" in caplog.text
    trainer.fit()
    assert [round(h["lr"], 8) for h in trainer.history] == [0.001, 5e-5, 5e-5]

    # last.pt.prev was written after step 1 of 2: the rest of the epoch starts at sample 1 x 2 per step.
    mid = tmp_path / "a" / "last.pt.prev"
    assert load_checkpoint(mid)["step_in_epoch"] == 1
    other = Trainer(create_model("dspose_t"), Heatmaps(4), _config(tmp_path / "c", epochs=2, batch_size=1))
    with pytest.raises(ValueError, match=r"written with 2 persons per process per step .* this run has 1"):
        other.resume(mid)
    same = Trainer(create_model("dspose_t"), Heatmaps(4), _config(tmp_path / "d", epochs=2, batch_size=1,
                                                                  accumulate=2))
    same.resume(mid)  # 1 x 2 accumulated = the checkpoint's 2 per step
    assert (same.epoch, same.step_in_epoch) == (0, 1)


def _without_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its BatchNorm layers made identities: their batch statistics would differ per micro-batch."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
                setattr(module, child_name, torch.nn.Identity())
    return model


def test_accumulated_micro_batches_train_as_one_batch(tmp_path):
    weights, grads, losses = [], [], []
    for name, batch, accumulate in (("whole", 4, 1), ("accumulated", 2, 2), ("auto", 1, "auto")):
        torch.manual_seed(0)
        model = _without_batchnorm(create_model("dspose_t"))
        config = _config(tmp_path / name, epochs=2, batch_size=batch, accumulate=accumulate, global_batch=4)
        summary = Trainer(model, Heatmaps(8), config).fit()
        assert summary.global_step == 4  # 8 samples / 4 per step, 2 epochs
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        losses.append([float(r["loss"]) for r in read_csv(tmp_path / name / "steps.csv")])
    for w, g, loss in zip(weights[1:], grads[1:], losses[1:]):
        assert loss == pytest.approx(losses[0], rel=1e-5)
        # Equal up to float rounding (Adam divides by tiny second moments, so weights agree to ~1e-5, not bits);
        # the last step's gradient is the mean over its 4 persons, not a sum over micro-batches.
        assert (w - weights[0]).abs().max().item() < 1e-4  # 4 Adam steps of lr 1e-3 move weights up to 4e-3
        assert ((g - grads[0]).norm() / grads[0].norm()).item() < 1e-3


def test_accumulation_leaves_no_sample_out_and_auto_must_divide(tmp_path):
    # 5 micro-batches of 2, 2 per step: steps of 2, 2 and 1 micro-batches.
    trainer = Trainer(create_model("dspose_t"), Heatmaps(10), _config(tmp_path, batch_size=2, accumulate=2))
    assert trainer.steps_per_epoch == 3 and trainer.fit().global_step == 3
    with pytest.raises(ValueError, match="optim.global_batch 6 is not a multiple of 1 process"):
        Trainer(create_model("dspose_t"), Heatmaps(8), _config(tmp_path / "b", batch_size=4, accumulate="auto",
                                                                global_batch=6))
    with pytest.raises(ValueError, match="optim.accumulate = 'twice'"):
        TrainConfig(optim=OptimConfig(accumulate="twice"))


def test_resume_auto_starts_then_continues_and_skips_a_damaged_checkpoint(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "run"
    first = Trainer(create_model("dspose_t"), Heatmaps(4), _config(out, epochs=1, keep_checkpoints=2))
    assert first.fit(resume="auto").global_step == 2 and "no checkpoint in" in caplog.text
    again = Trainer(create_model("dspose_t"), Heatmaps(4), _config(out, epochs=3, keep_checkpoints=2))
    summary = again.fit(resume="auto")
    assert summary.global_step == 6 and [int(r["global_step"]) for r in read_csv(out / "steps.csv")] == [1, 2, 3, 4,
                                                                                                          5, 6]
    # keep_checkpoints: 2 -> the two newest epoch ends beside last.pt.
    assert sorted(p.name for p in out.glob("epoch_*.pt")) == ["epoch_0002.pt", "epoch_0003.pt"]
    assert load_checkpoint(out / "epoch_0002.pt")["epoch"] == 2
    # A damaged last.pt: auto takes last.pt.prev (epoch 2) with a warning.
    (out / "last.pt").write_bytes(b"cut")
    caplog.clear()
    third = Trainer(create_model("dspose_t"), Heatmaps(4), _config(out, epochs=3))
    assert third.resume("auto") and third.epoch == 2
    assert "skipping" in caplog.text and "last.pt.prev" in caplog.text


def test_the_resume_hint_names_the_last_good_checkpoint_and_the_command(tmp_path):
    config = tmp_path / "my run.yaml"
    assert resume_hint(tmp_path, config) == (f"no checkpoint was written yet in {tmp_path}; run the same command "
                                             "again to start over")
    (tmp_path / "last.pt").write_bytes(b"a checkpoint")
    hint = resume_hint(tmp_path, config, ["optim.lr=1e-3"], env={"WORLD_SIZE": "1"})
    assert hint == (f"the last good checkpoint is {tmp_path / 'last.pt'}; resume with: dspose train "
                    f"{shlex.quote(str(config))} --resume {shlex.quote(str(tmp_path / 'last.pt'))} --set optim.lr=1e-3")
    assert resume_hint(tmp_path, config, env={"WORLD_SIZE": "2"}).endswith(
        " (under torchrun: the same torchrun command with --resume)")


def _resume_worker(rank: int, world: int, init_file: str, paths: list[str], out_dir: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        info = DistInfo(rank=rank, world_size=world, local_rank=rank)
        torch.manual_seed(100 + rank)  # different initial weights: the checkpoint's must replace them
        trainer = Trainer(create_model("dspose_t"), Heatmaps(4), _config(out_dir, epochs=2), info=info)
        trainer.resume(paths[rank])
        results[rank] = (trainer.epoch, trainer.global_step, trainer.optimizer.param_groups[0]["lr"],
                         torch.cat([p.detach().flatten() for p in trainer.model.parameters()]).sum().item())
    finally:
        dist.destroy_process_group()


def test_only_rank_0_reads_the_resume_checkpoint(tmp_path):
    # Node-local run folders: node 1 has no copy of rank 0's checkpoint.
    torch.manual_seed(0)
    Trainer(create_model("dspose_t"), Heatmaps(4), _config(tmp_path / "node0")).fit()
    saved = load_checkpoint(tmp_path / "node0" / "last.pt")
    names = {name for name, _ in create_model("dspose_t").named_parameters()}
    expected = torch.cat([v.flatten() for k, v in saved["state_dict"].items() if k in names]).sum().item()
    results = mp.Manager().dict()
    paths = [str(tmp_path / "node0" / "last.pt"), str(tmp_path / "node1" / "last.pt")]
    mp.spawn(_resume_worker, args=(2, str(tmp_path / "init"), paths, str(tmp_path / "out"), results), nprocs=2,
             join=True)
    assert results[0] == results[1]
    epoch, step, lr, total = results[0]
    assert (epoch, step, lr) == (1, 2, 1e-3) and total == pytest.approx(expected, rel=1e-6)
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
