"""Model cards, the per-user model cache and safe (safetensors-only, sha256-checked) weight loading.

``from MRISynthesisLib.model_store import ModelRegistry, ModelCard, write_model``. Importing this package does
not import torch; only ``load_state_dicts`` and ``write_model`` do.
"""

from .card import ModelCard, ModelFile, validate_card
from .export import write_model
from .registry import ModelRegistry, default_home

__all__ = ["ModelCard", "ModelFile", "ModelRegistry", "default_home", "validate_card", "write_model"]
