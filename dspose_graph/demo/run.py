"""The demo end to end: data, physical topology, a few minutes of training, held-out table, figures, report.

:func:`run_demo` is what ``dspose demo`` calls; each step is a function of :mod:`dspose_graph.demo.data`,
:mod:`~dspose_graph.demo.baselines` or :mod:`~dspose_graph.demo.report` on top of the training pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dspose_graph.demo.baselines import START_ROW, evaluate_rows, goal_lines, metric_table, verdict
from dspose_graph.demo.data import SETTINGS, DemoData, is_real, model_overrides, resolve_data
from dspose_graph.demo.report import adjacency_figure, predictions_figure, render_report, topology_section
from dspose_graph.graph.layers import CONVS
from dspose_graph.io import atomic_write_text
from dspose_graph.models.checkpoint import checkpoint_state, load_checkpoint, save_checkpoint
from dspose_graph.models.presets import resolve_config
from dspose_graph.train.config import EvalConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from dspose_graph.train.pipeline import TrainResult, build_dataset, build_model, train
from dspose_graph.weights import resolve_weights

log = logging.getLogger(__name__)

# The shipped weights whose backbone and Transformer start the demo's model (with a fresh graph head): on
# photographs the model trained on 9,000 LSPET images, on generated people the one trained on generated people.
PRETRAINED = {"dspose_t": {"real": "dspose_t_lspet", "synthetic": "dspose_t_synthetic"}}


@dataclass
class DemoOptions:
    """Everything ``dspose demo`` can be told; ``None`` fields take the data's defaults (:data:`SETTINGS`)."""

    out: Path = Path("runs/demo")
    data: str | Path | None = None  # a COCO-format root, "synthetic", or None (LSPET when found, else generated)
    model: str = "dspose_t"
    conv: str | None = None  # the graph head's convolution (dspose_graph.graph.layers.CONVS); None: SETTINGS
    minutes: float | None = None  # the training time budget
    steps: int | None = None  # the training budget in optimiser steps (real data); None: SETTINGS
    epochs: int | None = None
    lr: float | None = None
    augment: bool | None = None
    sigma: float = 3.0
    batch_size: int = 16
    train_images: int = 1200
    val_images: int = 150
    workers: int = 1
    threads: int = 1
    init: str = "auto"
    seed: int = 0


@dataclass
class DemoResult:
    """What the demo produced: the table rows, the report path and text, the trained model."""

    rows: dict[str, dict[str, float]]
    report: Path
    text: str
    learned: bool
    model: torch.nn.Module
    figures: dict[str, Path] = field(default_factory=dict)


def resolve_init(init: str, model: str, real: bool) -> str:
    """``ModelConfig.init_from`` for ``--init``: "" for random weights or a shipped body (:func:`body_init`)."""
    return "" if init in ("auto", "random") else init


def body_init(init: str, model: str, real: bool) -> str:
    """The shipped weights whose backbone and Transformer start the run ("" for none): ``--init auto`` only.

    Their graph head is not reused: the demo shows a head learning. On generated people the synthetic weights'
    head is also the paper's convolution trained with flips, which put each left joint and its right partner on
    one heatmap (docs/decisions/synthetic.md).
    """
    return PRETRAINED.get(model, {}).get("real" if real else "synthetic", "") if init == "auto" else ""


def body_start(weights: str, config: TrainConfig, path: Path, seed: int) -> Path:
    """Write a checkpoint of ``config``'s model at ``path``: backbone and Transformer from ``weights`` (keypoint
    tokens matched by name across skeletons), the head freshly initialised (seeded with ``seed``); returns
    ``path``, for ``ModelConfig.init_from``."""
    from dspose_graph.models.transfer import init_from_checkpoint

    torch.manual_seed(seed)
    model = build_model(dataclasses.replace(config, model=dataclasses.replace(config.model, init_from="")))
    source = resolve_weights(weights)
    try:
        init_from_checkpoint(model, source, exclude=["head."])
    except ValueError as e:
        raise ValueError(f"{source}: its backbone/Transformer do not fit model {config.model.name!r} "
                         f"{config.model.overrides}: {e}") from None
    provenance = {"body_from": str(source), "head": f"fresh, seed {seed}"}
    return save_checkpoint(path, checkpoint_state(model, provenance=provenance), keep_previous=False)


def demo_milestones(epochs: int) -> list[int]:
    """One x0.1 decay at 90% of a short run (none for 1-2 epochs).

    The paper decays at 2/3 and 13/15 of 300 epochs, when learning has converged. A few-minute run is still
    early: measured, the loss left its symmetric plateau at epoch 14 of 27 and the 2/3 decay at epoch 20 froze
    it there, so the demo keeps the full rate for nearly all of its budget.
    """
    return sorted({m for m in (round(epochs * 0.9),) if 0 < m < epochs})


def train_config(options: DemoOptions, data: DemoData) -> TrainConfig:
    """The pipeline config of the demo's run (options already completed by :func:`with_defaults`)."""
    overrides = model_overrides(data.config)
    if options.conv:
        overrides["conv"] = options.conv
    return TrainConfig(
        model=ModelConfig(name=options.model, overrides=overrides,
                          init_from=resolve_init(options.init, options.model, data.real)),
        data=data.config,
        optim=OptimConfig(lr=options.lr, epochs=options.epochs, batch_size=options.batch_size,
                          milestones=demo_milestones(options.epochs), grad_clip=1.0, max_steps=options.steps or 0,
                          precision="auto" if data.real else "fp32"),
        eval=EvalConfig(every=0, flip_test=data.mirror_safe, decode="dark", batch_size=32),
        run=RunConfig(out_dir=str(options.out / "train"), seed=options.seed, workers=options.workers, log_every=5,
                      tensorboard=False, max_minutes=options.minutes or 0.0),
    )


def with_defaults(options: DemoOptions, real: bool) -> DemoOptions:
    """``options`` with its ``None`` fields set from :data:`SETTINGS` for real or generated data (``conv`` only
    for a model with a graph head)."""
    preset = dict(SETTINGS["real" if real else "synthetic"])
    if resolve_config(options.model).head == "mlp":
        preset.pop("conv", None)
    return dataclasses.replace(options, **{k: v for k, v in preset.items() if getattr(options, k) is None})


# Each numeric option's lowest value, and whether that value itself is allowed.
OPTION_LIMITS = {"epochs": (1, True), "steps": (1, True), "batch_size": (1, True), "minutes": (0, False), "lr": (0, False),
                 "sigma": (0, False), "train_images": (1, True), "val_images": (1, True),
                 "workers": (0, True), "threads": (1, True)}


def check_options(options: DemoOptions) -> None:
    """Refuse impossible options (completed by :func:`with_defaults`) naming the option, before anything is
    generated or written: the model and graph convolution by name, the starting weights, the numbers' ranges."""
    for name, (low, inclusive) in OPTION_LIMITS.items():
        value = getattr(options, name)
        if value is None:
            continue
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            raise ValueError(f"--{name.replace('_', '-')} {value:g}: must be {'>=' if inclusive else '>'} {low}")
    resolve_config(options.model)  # an unknown name lists the valid ones
    if options.conv and options.conv not in CONVS:
        raise ValueError(f"--conv {options.conv}: unknown graph convolution; valid: {', '.join(sorted(CONVS))}")
    if options.init not in ("auto", "random"):
        try:
            resolve_weights(options.init)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"--init {options.init}: {e}") from None


def run_demo(options: DemoOptions) -> DemoResult:
    """Run the whole demo into ``options.out``; returns the held-out rows and the report."""
    started = time.perf_counter()
    out = options.out
    options = with_defaults(options, is_real(options.data))
    check_options(options)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, options.threads))
    data = resolve_data(options.data, out, sigma=options.sigma, augment=bool(options.augment),
                        train_images=options.train_images, val_images=options.val_images,
                        seed=options.seed)
    topology = topology_section(out, model_overrides(data.config)["schema"])
    config = train_config(options, data)
    body = body_init(options.init, options.model, data.real)
    if body:
        start = body_start(body, config, out / "start.pt", options.seed)
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, init_from=str(start)))
    # train() seeds the same way: the same random draw, and with init_from its exact starting weights.
    baselines: dict[str, torch.nn.Module] = {}
    torch.manual_seed(options.seed)
    baselines["untrained"] = build_model(dataclasses.replace(config, model=dataclasses.replace(config.model, init_from="")))
    if config.model.init_from:
        torch.manual_seed(options.seed)
        baselines[START_ROW] = build_model(config)
    if options.steps:
        log.info("training %d steps of batch %d: expected about %.1f min here (%.2f s per step measured on this "
                 "machine now)", options.steps, options.batch_size, *_expected_minutes(baselines["untrained"], config,
                                                                                       options.steps))
    train_started = time.perf_counter()
    result = train(config, source="dspose demo")
    train_minutes = (time.perf_counter() - train_started) / 60
    model, val_set = result.model, result.val_set
    rows = evaluate_rows(model, baselines, build_dataset(config, model, "train"), val_set, flip_test=data.mirror_safe,
                         batch_size=config.eval.batch_size, workers=options.workers)
    figures = {"predictions": predictions_figure(model, val_set, out / "predictions.png", flip_test=data.mirror_safe)}
    why_no_adjacency = adjacency_figure(model, val_set, out / "adjacency.png")
    if why_no_adjacency is None:
        figures["adjacency"] = out / "adjacency.png"
    learned, verdict_text = verdict(rows)
    total_minutes = (time.perf_counter() - started) / 60
    summary = _summary(options, config, result, train_minutes, total_minutes, body)
    text = render_report(
        summary=summary, data_description=data.description, generator=data.generator, table=metric_table(rows),
        verdict_text=verdict_text, goals=goal_lines(rows, real=data.real),
        evaluation=_evaluation_text(config, data), topology=topology,
        notes=[why_no_adjacency] if why_no_adjacency else [], adjacency_drawn=why_no_adjacency is None)
    report = out / "report.md"
    atomic_write_text(report, text)
    if not learned:
        log.warning("the trained model does not beat both baselines; see %s", report)
    return DemoResult(rows=rows, report=report, text=text, learned=learned, model=model, figures=figures)


def _expected_minutes(model: torch.nn.Module, config: TrainConfig, steps: int, repeats: int = 3) -> tuple[float, float]:
    """``(minutes, seconds per step)`` of ``steps`` training steps, from timing ``repeats`` steps of a copy of
    ``model`` on random crops at the run's batch size and precision (the model itself is left untouched)."""
    import copy

    from dspose_graph.models.runtime import prepare_model, resolve_precision

    trial = copy.deepcopy(model)
    precision, _ = resolve_precision(config.optim.precision, "cpu")
    runner = prepare_model(trial, "cpu", precision)
    optimizer = torch.optim.Adam(trial.parameters(), 1e-4)
    w, h = trial.input_size
    images = torch.randn(config.optim.batch_size, 3, h, w)
    times = []
    for _ in range(repeats + 1):  # the first step pays oneDNN's kernel selection
        started = time.perf_counter()
        with runner.autocast():
            loss = trial(images).float().square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    per_step = sorted(times[1:])[repeats // 2]
    return steps * per_step / 60, per_step


def _summary(options: DemoOptions, config: TrainConfig, result: TrainResult, train_minutes: float,
             total_minutes: float, body: str) -> str:
    epochs = len(result.history)
    init = config.model.init_from
    start = (f"backbone + Transformer of {body!r} (see dspose_graph/weights) with a fresh graph head, saved as "
             f"{init}" if body else repr(init) + " (see dspose_graph/weights)" if init else "random")
    budget = (f"budget {options.steps} steps" if options.steps else
              f"budget {options.minutes:g} min / {options.epochs} epochs")
    return (f"Model `{options.model}` ({result.params / 1e6:.2f} M parameters), trained {epochs} epochs "
            f"({result.global_step} steps of batch {options.batch_size}) in {train_minutes:.1f} min; whole demo "
            f"{total_minutes:.1f} min on {os.cpu_count()} CPU cores ({options.threads} compute thread(s), "
            f"{options.workers} data-loading process(es)). Model overrides: {config.model.overrides}; starting "
            f"weights: {start}; target sigma "
            f"{options.sigma:g}; training augmentation {'on' if config.data.augment else 'off'}; Adam lr "
            f"{options.lr:g}, batch {options.batch_size}, {budget}; "
            f"{len(result.train_set)} training and {len(result.val_set)} held-out persons (ground-truth boxes).")


def _evaluation_text(config: TrainConfig, data: DemoData) -> str:
    init = config.model.init_from
    flip = ("flip test (the mirrored crop's heatmaps averaged in) + DARK decoding" if data.mirror_safe else
            "DARK decoding without flip test (a mirrored generated person keeps its side colours while its "
            "labels swap, so averaging in the mirrored pass would blend left and right)")
    return ("OKS AP / AR: pycocotools on the held-out annotation file, with each person's true mask area (values "
            "in %). PCK@0.2: keypoints within 0.2 x the longest side of the person box, over labelled keypoints. "
            "torso_PCK@0.2: within 0.2 x the distance between the person's left shoulder and right hip (the metric "
            "LSP papers report), over persons with both labelled. "
            "swap: percent of left/right joint pairs (both labelled) whose crossed assignment is the closer one. "
            "mirror: percent of those pairs (persons with a torso) with both joints within 0.2 torso of the other "
            "side's label, the confident left/right mistakes. All models use "
            f"{flip}; 'untrained' is the same network with random weights (the seed of the run); "
            + (f"'{START_ROW}' is the network with the starting weights {init!r} before training on these "
               "images; " if init else "")
            + "'mean pose' places the mean normalised training pose in each held-out box.")
