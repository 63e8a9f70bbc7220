"""dspose-graph: DSPose (dual-space keypoint topology) for top-down human pose estimation."""

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "Predictor", "KeypointGraph"]


def __getattr__(name: str):
    # Lazy so that `import dspose_graph` stays light and submodules can import the package freely.
    if name in ("create_model", "list_models"):
        from dspose_graph.models import presets

        return getattr(presets, name)
    if name == "Predictor":
        from dspose_graph.predict import Predictor

        return Predictor
    if name == "KeypointGraph":
        from dspose_graph.graph.keypoint_graph import KeypointGraph

        return KeypointGraph
    raise AttributeError(f"module 'dspose_graph' has no attribute {name!r}")
