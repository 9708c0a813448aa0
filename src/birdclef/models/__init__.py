"""Models: a registry of heads (``sed``, ``cnn``) over timm backbones with the mel front end inside."""

from birdclef.models import heads as _heads  # noqa: F401  (registers the built-in heads)
from birdclef.models._registry import get_head, list_heads, register_head
from birdclef.models.backbone import GeM, ModelConfig, load_backbone_weights
from birdclef.models.checkpoint import load_checkpoint, save_checkpoint
from birdclef.models.heads import Head
from birdclef.models.model import BirdModel, InferenceWrapper, create_model

__all__ = [
    "BirdModel",
    "GeM",
    "Head",
    "InferenceWrapper",
    "ModelConfig",
    "create_model",
    "get_head",
    "list_heads",
    "load_backbone_weights",
    "load_checkpoint",
    "register_head",
    "save_checkpoint",
]
