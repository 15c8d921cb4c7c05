"""Reading PyTorch `.pth` checkpoints (without torch) and mapping them onto our models.

Modules:
  safe_unpickler  the restricted unpickler: allow-list of globals, inert stand-ins, errors.
  torch_pickle    `load_torch_state_dict(path)`: legacy and zip `.pth` files -> numpy arrays.
  mapping         `torch_state_dict_to_nnx(state_dict, model)`: the name and layout table.
  converter       `convert_torch_checkpoint(pth, out_dir, model=...)`: `.pth` -> model checkpoint
                  (imported on its own: it pulls in orbax).
"""

from addernet_jax.convert.mapping import (
    strip_data_parallel_prefix,
    torch_entries,
    torch_state_dict_to_nnx,
)
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
    "strip_data_parallel_prefix",
    "torch_entries",
    "torch_state_dict_to_nnx",
]
