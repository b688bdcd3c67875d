"""Models over windows of activity. See :func:`build_model` for the names."""

from wormgnn.models.common import ModelOutput, model_inputs, rollout
from wormgnn.models.registry import MODEL_CONFIGS, NEURAL_MODELS, build_model

__all__ = [
    "MODEL_CONFIGS",
    "NEURAL_MODELS",
    "ModelOutput",
    "build_model",
    "model_inputs",
    "rollout",
]
