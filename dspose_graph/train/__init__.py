"""Training from Python: the config schema, ``train(config) -> TrainResult`` and ``evaluate(config, weights)``.

See :mod:`dspose_graph.train.pipeline` (the pipeline), :mod:`dspose_graph.train.config` (the YAML schema)
and :mod:`dspose_graph.train.trainer` (the loop); ``dspose train`` is their command line.
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
from dspose_graph.train.pipeline import TrainResult, build_datasets, build_evaluator, build_model, evaluate, train

__all__ = ["DataConfig", "EvalConfig", "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig", "TrainResult",
           "build_datasets", "build_evaluator", "build_model", "evaluate", "load_config", "train"]
