"""The training loop: MSE heatmap loss, Adam + multistep schedule, AMP, DDP, exact resume, best checkpoint.

Checkpoints (``last.pt``, ``best.pt``) hold everything a resumed run needs to continue *bit-for-bit* on
CPU in deterministic mode: model, optimiser, scheduler, GradScaler, RNG states, and the position in the
epoch (``epoch`` = the epoch in progress, ``step_in_epoch`` = optimiser steps done in it). The sample
order and augmentation are pure functions of the seed (see :mod:`dspose_graph.train.sampling`).

A step never waits for the device: losses are summed on it (:class:`LossMeter`) and read, with one host wait and
one all-reduce, every ``run.log_every`` steps, before every checkpoint and at the end of each epoch. A NaN/inf
loss is found at that read: every rank reads the same reduced flag, so all stop together, before anything is
saved, naming the first step whose loss was not finite. On CUDA the trainer turns on cuDNN autotuning (unless
``run.deterministic``), TF32 and fused Adam; ``run.channels_last`` goes through
:func:`dspose_graph.models.runtime.prepare_model`, ``run.compile`` compiles the DDP-wrapped model (all-reduces
overlap the backward), ``optim.precision`` picks its precision, ``run.sync_bn`` synchronises BatchNorm and
``optim.accumulate`` sums micro-batches per step. Under DDP, rank 0 alone reads a resumed checkpoint and writes
files; an error there stops every rank (``distributed.on_main``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from dspose_graph.data.image import normalize_batch, opencv_single_thread
from dspose_graph.io import provenance
from dspose_graph.models import DSPose, load_state_dict_checked
from dspose_graph.models.checkpoint import checkpoint_state, save_checkpoint
from dspose_graph.models.runtime import AUTO, PRECISIONS, compile_model, prepare_model, resolve_precision
from dspose_graph.train.config import TrainConfig, config_to_dict
from dspose_graph.train.distributed import (DistInfo, barrier, broadcast_buffers, broadcast_object,
                                            on_main, sync_batchnorm, workers_per_rank)
from dspose_graph.train.loss import LossMeter, NonFiniteLossError, heatmap_mse_loss
from dspose_graph.train.logs import StepLog, plot_learning_curve, tensorboard_writer, write_epoch_csv
from dspose_graph.train.optim import (accumulation_steps, apply_schedule, load_scaler_state, load_scheduler_state,
                                      make_optimizer, make_scheduler, match_state_layout, scheduler_state)
from dspose_graph.train.run_folder import keep_epoch_checkpoint, load_resume_state
from dspose_graph.train.rng import rng_state, set_rng_state
from dspose_graph.train.sampling import ResumableSampler, SeededDataset

log = logging.getLogger(__name__)
__all__ = ["Trainer", "FitSummary", "NonFiniteLossError", "LossMeter", "heatmap_mse_loss", "make_optimizer",
           "load_scaler_state", "cuda_defaults", "set_deterministic"]



def set_deterministic(seed: int, deterministic: bool) -> None:
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def cuda_defaults(device: torch.device, deterministic: bool) -> None:
    """Speed settings for training on CUDA: cuDNN picks the fastest convolution for each shape (not when
    ``deterministic``: its choice may vary between runs), matmuls and convolutions in TF32 (Ampere and later;
    10-bit mantissa products, fp32 accumulation). Nothing changes on other devices."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


@dataclasses.dataclass
class FitSummary:
    """What :meth:`Trainer.fit` returns: epochs done, optimiser steps, best value of the selection metric,
    the last evaluation's metrics and one history row per epoch (loss, lr, seconds, metrics)."""

    epochs: int
    global_step: int
    best: float | None
    metrics: dict[str, float]
    history: list[dict[str, Any]]


class Trainer:
    """Trains ``model`` on ``train_set`` as ``config`` says; ``evaluate(model) -> metrics`` runs every
    ``config.eval.every`` epochs and at the end.

    The schedule and run knobs are read from ``config.optim``, ``config.run`` and ``config.eval`` (their
    defaults are the only defaults); outputs go to ``config.run.out_dir``.
    """

    def __init__(
        self,
        model: DSPose,
        train_set: Dataset,
        config: TrainConfig,
        *,
        evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
        device: torch.device | str = "cpu",
        info: DistInfo | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        self.optim, self.run = config.optim, config.run
        if self.optim.precision not in (*PRECISIONS, AUTO):
            raise ValueError(f"optim.precision={self.optim.precision!r}: expected one of {', '.join((*PRECISIONS, AUTO))}")
        self.device = torch.device(device)
        if self.optim.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("optim.precision='fp16' needs CUDA (GradScaler); on CPU use 'bf16' or 'fp32'")
        self.config = config
        self.eval_every = config.eval.every
        self.best_metric = config.best_metric
        self.info = info or DistInfo()
        self.out_dir = Path(self.run.out_dir)
        self.evaluate = evaluate
        self.provenance = dict(provenance or {})
        set_deterministic(self.run.seed, self.run.deterministic)
        cuda_defaults(self.device, self.run.deterministic)
        self.model = sync_batchnorm(model, self.info, self.device) if self.run.sync_bn else model
        precision, why = resolve_precision(self.optim.precision, self.device)
        if self.info.is_main:
            log.info("training precision %s (optim.precision=%s: %s)", precision, self.optim.precision, why)
        self.precision = precision
        self.prepared = prepare_model(self.model, self.device, precision, channels_last=self.run.channels_last)
        self.net: torch.nn.Module = self.model
        self.ddp: torch.nn.parallel.DistributedDataParallel | None = None
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if self.run.compile:
            # compile(DDP(model)): the compiled graph is split at DDP's buckets, so each bucket's all-reduce
            # overlaps the rest of the backward pass (DDP(compile(model)) would wait for the whole backward).
            self.net = compile_model(self.net, self.model)
        self.accumulate = accumulation_steps(config, self.info.world_size)
        self.train_set = SeededDataset(train_set, self.run.seed)
        self.sampler = ResumableSampler(len(train_set), seed=self.run.seed, shuffle=True,  # type: ignore[arg-type]
                                        rank=self.info.rank, world_size=self.info.world_size, with_epoch=True)
        self.workers = workers_per_rank(self.run.workers, self.info)
        # The last partial batch is trained, as official TokenPose's DataLoader does (drop_last off); the last step
        # of an epoch sums the micro-batches left when they do not fill optim.accumulate.
        micro_batches = -(-len(self.sampler) // self.optim.batch_size)
        self.steps_per_epoch = -(-micro_batches // self.accumulate)
        self.optimizer = make_optimizer(self.model, self.optim.lr, self.optim.weight_decay, self.device)
        self.scheduler = make_scheduler(self.optimizer, self.optim)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best: float | None = None
        # (best_metric, PCK@0.2) of the best epoch: PCK@0.2 breaks ties, e.g. while OKS AP is still 0.
        self.best_key: list[float] | None = None
        self.history: list[dict[str, Any]] = []
        self._epoch_loss_sum = 0.0
        self.resumed_metrics: dict[str, float] = {}  # the last evaluation stored in the resumed checkpoint
        self.resumed_from: str | None = None  # what resume() was asked for ("auto" or a path)
        self.resumed = False  # whether a checkpoint was restored
        self.meter = LossMeter(self.device)
        self.loader = self._loader()
        self.loader_img_s: float | None = None  # the loader-alone probe's rate (run.loader_probe)

    # ----------------------------------------------------------------- checkpoints
    def state(self, metrics: dict[str, float] | None = None) -> dict[str, Any]:
        """The checkpoint: the model (``models.checkpoint.checkpoint_state``), training config, resume state."""
        return checkpoint_state(
            self.model, name=self.config.model.name, epoch=self.epoch, metrics=metrics,
            provenance=provenance(None, seed=self.run.seed, **self.provenance), codec=self.config.data.codec,
            config=config_to_dict(self.config),
            step_in_epoch=self.step_in_epoch, global_step=self.global_step, epoch_loss_sum=self._epoch_loss_sum,
            best=self.best, best_key=self.best_key, history=self.history,
            optimizer=self.optimizer.state_dict(), scheduler=scheduler_state(self.scheduler),
            scaler=self.scaler.state_dict(), rng=rng_state(), world_size=self.info.world_size,
            samples_per_step=self.optim.batch_size * self.accumulate)

    def save(self, name: str, metrics: dict[str, float] | None = None, keep: bool = False) -> Path | None:
        """Rank 0 writes checkpoint ``name`` (with ``keep``, also its epoch copy, ``run.keep_checkpoints``); a
        failure (a full disk) stops every rank. Returns the path on rank 0, ``None`` elsewhere."""
        def write() -> Path:
            path = save_checkpoint(self.out_dir / name, self.state(metrics))
            if keep:
                keep_epoch_checkpoint(path, self.epoch, self.run.keep_checkpoints)
            return path

        path = on_main(write, self.info, f"saving {self.out_dir / name}")
        return path if self.info.is_main else None

    def resume(self, path: str | Path) -> bool:
        """Restore everything from a checkpoint written by this trainer (same model name and keypoints).

        ``path`` may be ``"auto"``: the run folder's newest checkpoint (``train.run_folder``), or a new start
        when it has none (returns ``False``). Only rank 0 reads the file; the others get its content, so node-local
        run folders need the checkpoint on rank 0's node only.
        """
        loaded = on_main(lambda: load_resume_state(path, self.out_dir), self.info, f"reading checkpoint {path}")
        self.resumed_from = str(path)
        if loaded is not None:
            self._restore(*loaded)
            self.resumed = True
        return self.resumed

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        if state["model"].get("name") != self.config.model.name:
            raise ValueError(f"{path}: checkpoint is for model {state['model'].get('name')!r}, "
                             f"this run trains {self.config.model.name!r}")
        load_state_dict_checked(self.model, state["state_dict"], source=str(path))
        for key in ("optimizer", "scheduler", "scaler", "rng"):
            if key not in state:
                raise ValueError(f"{path}: checkpoint has no {key!r} state, it cannot resume training "
                                 "(it can still initialise a model)")
        step_in_epoch = int(state.get("step_in_epoch", 0))
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.info.world_size:
            if step_in_epoch:
                raise ValueError(
                    f"{path}: checkpoint was written by {saved_world} process(es) in the middle of epoch "
                    f"{int(state['epoch']) + 1} (step {step_in_epoch}); this run has {self.info.world_size}. "
                    f"The rest of that epoch's sample order depends on the process count: resume it with "
                    f"{saved_world} process(es), or from a checkpoint written at an epoch end")
            log.info("%s: written by %d process(es), resumed by %d at the start of epoch %d", path, saved_world,
                     self.info.world_size, int(state["epoch"]) + 1)
        saved_optim = (state.get("config") or {}).get("optim") or {}
        saved_samples = int(state.get("samples_per_step", saved_optim.get("batch_size", 0)))
        samples = self.optim.batch_size * self.accumulate
        if step_in_epoch and saved_samples and saved_samples != samples:
            raise ValueError(
                f"{path}: checkpoint was written with {saved_samples} persons per process per step (optim.batch_size "
                f"x optim.accumulate) in the middle of epoch {int(state['epoch']) + 1}; this run has {samples}. Where "
                f"the rest of that epoch starts depends on it: resume with the checkpoint's optim.batch_size and "
                f"optim.accumulate, or from a checkpoint written at an epoch end")
        self.optimizer.load_state_dict(state["optimizer"])
        match_state_layout(self.optimizer)  # run.channels_last may differ from the run that saved it
        load_scheduler_state(self.scheduler, state["scheduler"])
        apply_schedule(self.optimizer, self.scheduler, self.optim, str(path))
        load_scaler_state(self.scaler, state["scaler"], str(path))
        self.epoch = int(state["epoch"])
        self.step_in_epoch = step_in_epoch
        self.global_step = int(state.get("global_step", 0))
        self._epoch_loss_sum = float(state.get("epoch_loss_sum", 0.0))
        self.best = state.get("best")
        self.best_key = state.get("best_key")
        self.history = list(state.get("history", []))
        self.resumed_metrics = dict(state.get("metrics") or {})
        set_rng_state(state["rng"])
        log.info("resumed from %s at epoch %d, step %d (global step %d), lr %g", path, self.epoch,
                 self.step_in_epoch, self.global_step, self.optimizer.param_groups[0]["lr"])

    # ----------------------------------------------------------------- training
    def _train_step(self, batches: list[dict[str, Any]]) -> None:
        """One optimiser step on the mean loss of ``batches`` (micro-batches; DDP syncs after the last only)."""
        self.optimizer.zero_grad(set_to_none=True)
        total: torch.Tensor | None = None
        for i, batch in enumerate(batches):
            images = self.prepared.prepare_input(normalize_batch(batch["image"].to(self.device, non_blocking=True)))
            target = batch["heatmap"].to(self.device, non_blocking=True)
            weight = batch["target_weight"].to(self.device, non_blocking=True)
            last = i == len(batches) - 1
            with contextlib.nullcontext() if last or self.ddp is None else self.ddp.no_sync():
                with self.prepared.autocast():
                    pred = self.net(images)
                loss = heatmap_mse_loss(pred, target, weight)
                self.scaler.scale(loss if len(batches) == 1 else loss / len(batches)).backward()
            total = loss.detach() if total is None else total + loss.detach()
        assert total is not None
        if self.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.meter.add(total if len(batches) == 1 else total / len(batches), self.global_step + 1)

    def _next_step(self, batches: Any) -> list[dict[str, Any]]:
        """The next optimiser step's micro-batches from ``batches``: ``optim.accumulate`` of them, fewer at the end
        of the epoch, none after it."""
        group: list[dict[str, Any]] = []
        while len(group) < self.accumulate:
            batch = next(batches, None)
            if batch is None:
                break
            group.append(batch)
        return group

    def _loader(self) -> DataLoader:
        """The training DataLoader, built once: workers persist across epochs and get each sample's epoch from
        the sampler; :meth:`_run_epoch` sets the sampler's epoch and start before iterating."""
        # The loader's own generator (not the global one) draws worker seeds, so starting it mid-epoch
        # on resume does not shift the global torch RNG.
        g = torch.Generator().manual_seed(self.run.seed * 7919)
        if self.workers:
            # Workers inherit one OpenCV thread from this process: setNumThreads inside a forked worker hangs
            # when this process had used OpenCV's pool (the copied pool's threads no longer exist).
            opencv_single_thread()
        return DataLoader(self.train_set, batch_size=self.optim.batch_size, sampler=self.sampler, drop_last=False,
                          num_workers=self.workers, generator=g, pin_memory=self.device.type == "cuda",
                          persistent_workers=self.workers > 0)

    def _read_losses(self, steps_log: StepLog | None, writer: Any, lr: float, bar: Any, speed: float) -> None:
        """Read the losses summed since the last read (the step's one host wait); stop on a non-finite one."""
        if not self.meter.steps:
            return
        steps = self.meter.steps
        value, bad = self.meter.read(self.info)
        if bad is not None:
            raise NonFiniteLossError(
                f"loss became {value} at global step {bad} (found at global step {self.global_step}, epoch "
                f"{self.epoch + 1}); stopped without saving. The last good checkpoint is "
                f"{self.out_dir / 'last.pt'} (lower optim.lr, enable optim.grad_clip, or check the data)")
        self._epoch_loss_sum += value * steps
        if steps_log is not None:
            steps_log.write(self.global_step, self.epoch, self.step_in_epoch, value, lr)
        bar.set_postfix(loss=f"{value:.3e}", lr=f"{lr:.1e}", img_s=f"{speed:.1f}")
        log.debug("step %d loss %.6e", self.global_step, value)
        if writer is not None:
            writer.add_scalar("train/loss", value, self.global_step)
            writer.add_scalar("train/lr", lr, self.global_step)

    def progress(self, epoch: int, bar: bool = False) -> str:
        """``epoch 3/20``, or with a step budget ``epoch 3, step 846/3000`` (the epochs then only bound the steps);
        for the progress bar, which counts the epoch's steps itself, ``epoch 3 (budget 3000 steps)``."""
        if self.optim.max_steps:
            return (f"epoch {epoch} (budget {self.optim.max_steps} steps)" if bar
                    else f"epoch {epoch}, step {self.global_step}/{self.optim.max_steps}")
        return f"epoch {epoch}/{self.optim.epochs}"

    def step_budget_reached(self) -> bool:
        """Whether ``optim.max_steps`` optimiser steps are done (a budget in steps: the same figures on any machine)."""
        return bool(self.optim.max_steps) and self.global_step >= self.optim.max_steps

    def _probe_loader(self, batches: int) -> float:
        """Images/s of the training data pipeline alone (its own short-lived loader, same workers and batch)."""
        n = min(batches, self.steps_per_epoch)
        indices = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(self.run.seed))
        loader = DataLoader(Subset(self.train_set, indices[: n * self.optim.batch_size].tolist()),
                            batch_size=self.optim.batch_size, num_workers=self.workers)
        it = iter(loader)
        next(it)  # worker start-up is not the pipeline's rate
        started, seen = time.perf_counter(), 0
        for batch in it:
            seen += batch["image"].shape[0]
        rate = seen / max(time.perf_counter() - started, 1e-9) if seen else float("nan")
        log.info("data pipeline alone: %.1f img/s (%d worker(s), %d batches of %d); compare the training img/s "
                 "logged per epoch", rate, self.workers, n - 1, self.optim.batch_size)
        return rate

    def _evaluate(self) -> dict[str, float]:
        """Evaluate the weights a checkpoint of this moment holds: rank 0's (buffers broadcast first)."""
        assert self.evaluate is not None
        if self.workers:
            # A new loader drops the old one and its persistent workers: evaluation starts its own, so a rank never
            # holds two sets of worker processes (and their memory); they start again with the next epoch.
            self.loader = self._loader()
        broadcast_buffers(self.model, self.info)
        return self.evaluate(self.model)

    def fit(self, resume: str | Path | None = None) -> FitSummary:
        """Train to ``optim.epochs`` (from the ``resume`` checkpoint when given; not read again when
        :meth:`resume` already restored it)."""
        if resume is not None and self.resumed_from != str(resume):
            self.resume(resume)
        resumed = self.resumed
        main = self.info.is_main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        steps_log = StepLog(self.out_dir / "steps.csv", resume_step=self.global_step if resumed else None) \
            if main else None
        writer = tensorboard_writer(self.out_dir / "tb") if main and self.run.tensorboard else None
        # A finished run resumed again trains nothing: it reports the metrics its checkpoint holds.
        metrics: dict[str, float] = dict(self.resumed_metrics)
        if resumed and self.epoch >= self.optim.epochs:
            log.warning("%s: the run already finished its %d epochs; nothing to train (raise optim.epochs to "
                        "continue it); its metrics are kept", resume, self.optim.epochs)
        if main and self.run.loader_probe and self.epoch < self.optim.epochs:
            self.loader_img_s = self._probe_loader(self.run.loader_probe)
        started = time.perf_counter()
        try:
            while self.epoch < self.optim.epochs and not self.step_budget_reached():
                metrics = self._run_epoch(steps_log, writer) or metrics
                over = bool(self.run.max_minutes) and (time.perf_counter() - started) / 60 > self.run.max_minutes
                # Rank 0 decides, so that all ranks stop at the same epoch.
                if broadcast_object(over, self.info) and self.epoch < self.optim.epochs:
                    log.warning("time budget of %.1f min used up after epoch %d of %d: stopping early",
                                self.run.max_minutes, self.epoch, self.optim.epochs)
                    if self.evaluate is not None and not (self.history and self.best_metric in self.history[-1]):
                        metrics = self._evaluate()
                        self.history[-1].update(metrics)
                    break
        finally:
            if steps_log is not None:
                steps_log.close()
            if writer is not None:
                writer.close()
        if self.history:
            on_main(self._write_curves, self.info, f"writing {self.out_dir / 'epochs.csv'}")
        barrier(self.info)
        return FitSummary(self.epoch, self.global_step, self.best, metrics, self.history)

    def _write_curves(self) -> None:
        write_epoch_csv(self.out_dir / "epochs.csv", self.history)
        plot_learning_curve(self.out_dir / "steps.csv", self.history, self.out_dir / "loss_curve.png",
                            metric=self.best_metric)

    def _run_epoch(self, steps_log: StepLog | None, writer: Any) -> dict[str, float] | None:
        from tqdm.auto import tqdm

        self.model.train()
        lr = self.optimizer.param_groups[0]["lr"]
        start_time = time.perf_counter()
        bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, desc=self.progress(self.epoch + 1, bar=True),
                   disable=not (self.run.progress and self.info.is_main), leave=False, dynamic_ncols=True)
        seen = 0
        waited = 0.0  # seconds this process sat waiting for the loader: a data-bound run shows here
        self.sampler.set_epoch(self.epoch, start=self.step_in_epoch * self.optim.batch_size * self.accumulate)
        batches = iter(self.loader)
        while True:
            asked = time.perf_counter()
            group = self._next_step(batches)
            waited += time.perf_counter() - asked
            if not group:
                batches = None  # the epoch's iterator: evaluation may drop the loader and its workers
                break
            self._train_step(group)
            self.step_in_epoch += 1
            self.global_step += 1
            seen += sum(batch["image"].shape[0] for batch in group) * self.info.world_size
            save = bool(self.run.checkpoint_every) and self.global_step % self.run.checkpoint_every == 0 \
                and self.step_in_epoch < self.steps_per_epoch
            if save or (self.run.log_every and self.global_step % self.run.log_every == 0):
                self._read_losses(steps_log, writer, lr, bar, seen / max(time.perf_counter() - start_time, 1e-9))
            bar.update(1)
            if save:
                self.save("last.pt")
            if self.step_budget_reached():
                log.info("step budget optim.max_steps=%d reached in epoch %d", self.optim.max_steps, self.epoch + 1)
                break
        del batches  # the epoch's iterator holds the persistent workers, which evaluation stops (_evaluate)
        self._read_losses(steps_log, writer, lr, bar, seen / max(time.perf_counter() - start_time, 1e-9))
        bar.close()
        train_loss = self._epoch_loss_sum / max(1, self.step_in_epoch)
        seconds = time.perf_counter() - start_time
        row: dict[str, Any] = {"epoch": self.epoch, "train_loss": train_loss, "lr": lr, "seconds": round(seconds, 3),
                               "global_step": self.global_step + 0,
                               "minutes": round(sum(r["seconds"] for r in self.history) / 60 + seconds / 60, 3),
                               "img_s": round(seen / max(seconds, 1e-9), 2),
                               "data_wait_pct": round(100 * waited / max(seconds, 1e-9), 1)}
        if self.loader_img_s is not None:
            row["loader_img_s"] = round(self.loader_img_s, 2)
        self.scheduler.step()
        self.epoch += 1
        self.step_in_epoch = 0
        self._epoch_loss_sum = 0.0
        metrics = None
        last_epoch = self.epoch == self.optim.epochs or self.step_budget_reached()
        if self.evaluate is not None and (last_epoch or (self.eval_every and self.epoch % self.eval_every == 0)):
            metrics = self._evaluate()
            row.update(metrics)
            if writer is not None:
                for k, v in metrics.items():
                    writer.add_scalar(f"val/{k}", v, self.epoch)
        self.history.append(row)
        if writer is not None:
            writer.add_scalar("train/epoch_loss", train_loss, self.epoch)
        shown = {k: v for k, v in (metrics or {}).items() if "/" not in k}  # per-joint values: epochs.csv
        log.info("%s: loss %.4e, %.1f img/s (waiting on data %.0f%% of the time)%s", self.progress(self.epoch),
                 train_loss, row["img_s"], row["data_wait_pct"],
                 "".join(f", {k} {v:.4g}" for k, v in shown.items()))
        key = [float(metrics[self.best_metric]), float(metrics.get("PCK@0.2", float("-inf")))] \
            if metrics and self.best_metric in metrics else None
        is_best = key is not None and (self.best_key is None or key > self.best_key)
        if is_best:
            self.best, self.best_key = key[0], key
        self.save("last.pt", metrics, keep=True)
        if is_best:
            self.save("best.pt", metrics)
        on_main(lambda: write_epoch_csv(self.out_dir / "epochs.csv", self.history), self.info,
                f"writing {self.out_dir / 'epochs.csv'}")
        return metrics

