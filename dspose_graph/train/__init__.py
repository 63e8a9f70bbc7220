"""Training from Python: the config schema and ``train(config) -> TrainResult``.

See :mod:`dspose_graph.train.pipeline` (the pipeline), :mod:`dspose_graph.train.config` (the YAML schema)
and :mod:`dspose_graph.train.trainer` (the loop); ``dspose train`` is their command line. Import
``evaluate(config, weights)`` from ``dspose_graph.train.pipeline``: in this package the name ``evaluate`` is
the submodule of held-out prediction and metrics (``train/evaluate.py``), which replaces a re-exported
function of that name as soon as it is imported.
"""

from dspose_graph.train.config import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    load_config,
)
from dspose_graph.train.pipeline import TrainResult, build_datasets, build_evaluator, build_model, train

__all__ = ["DataConfig", "EvalConfig", "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig", "TrainResult",
           "build_datasets", "build_evaluator", "build_model", "load_config", "train"]
