"""Reading PyTorch `.pth` checkpoints (without torch) and mapping them onto our models."""

from addernet_jax.convert.torch_pickle import (
    DEFAULT_MODULE_CLASSES,
    CheckpointFormatError,
    UnsafePickleError,
    load_torch_state_dict,
)

__all__ = [
    "DEFAULT_MODULE_CLASSES",
    "CheckpointFormatError",
    "UnsafePickleError",
    "load_torch_state_dict",
]
