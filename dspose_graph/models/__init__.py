"""dspose_graph.models: timm HRNet stage 3 + keypoint-token Transformer + MLP or dual-space graph head."""

from dspose_graph.models.dspose import DSPose, DSPoseConfig
from dspose_graph.models.presets import (
    PRESETS,
    create_model,
    create_model_from_config,
    list_models,
    load_state_dict_checked,
)

__all__ = ["DSPose", "DSPoseConfig", "PRESETS", "create_model", "create_model_from_config", "list_models",
           "load_state_dict_checked"]
