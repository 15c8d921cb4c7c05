"""tfds datasets through `tfds.data_source`: random access over array_record files, no TensorFlow.

`tfds.data_source` downloads and prepares a missing dataset by default, which on a machine without
network hangs or fails deep inside tfds. `tfds_source` first asks for the prepared data only;
when there is none it downloads and prepares it (array_record format) only if the download host
answers within seconds, and otherwise fails at once with a message that says how to use local
files. (The download branch needs network, which this project's test machines do not have.)
"""

from __future__ import annotations

import socket
from typing import Any

import numpy as np

# tfds serves the MNIST/CIFAR files from this host; a quick connection decides whether to try.
DOWNLOAD_PROBE = ("storage.googleapis.com", 443)


def network_reachable(address: tuple[str, int] = DOWNLOAD_PROBE, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to `address` opens within `timeout` seconds."""
    try:
        socket.create_connection(address, timeout=timeout).close()
    except OSError:
        return False
    return True


class TfdsSource:
    """A tfds data source whose records are normalised to {'image': uint8 HWC, 'label': int}.

    Other features (`id`, `coarse_label`, `file_name`, ...) are dropped.
    """

    def __init__(self, data_source: Any, *, name: str):
        self.data_source = data_source
        self.name = name

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return _normalise(self.data_source[index])

    def __repr__(self) -> str:
        return f"TfdsSource({self.name}, {len(self)} records)"


def _normalise(record: dict[str, Any]) -> dict[str, Any]:
    """{'image': uint8 HWC, 'label': int} from a decoded tfds record."""
    image = np.asarray(record["image"], np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    return {"image": image, "label": int(record["label"])}


TRAIN_LOCAL_FLAG = "--config.data.source=local --config.data.local_path"
TRAIN_DATA_DIR_FLAG = "--config.data.data_dir"


def not_prepared_message(name: str, data_dir: str, local_hint: str,
                         local_flag: str | None = None) -> str:
    """The error text for a tfds dataset that is not prepared and cannot be downloaded here.

    `local_flag` names the caller's flag for local files (default: train.py's config fields;
    evaluate.py passes '--local-path'); the tfds directory flag follows the same program.
    """
    local_flag = local_flag or TRAIN_LOCAL_FLAG
    data_dir_flag = TRAIN_DATA_DIR_FLAG if local_flag == TRAIN_LOCAL_FLAG else "--data-dir"
    return (
        f"tfds dataset {name!r} is not prepared under {data_dir} and cannot be downloaded "
        f"(no connection to {DOWNLOAD_PROBE[0]}). Either prepare it once on a machine with "
        "network, in "
        f"array_record format (`tfds build {name} --file_format=array_record "
        f"--data_dir=DIR`), and pass {data_dir_flag}=DIR; or read local files with "
        f"{local_flag}=/path/to/{local_hint}"
    )


def tfds_source(name: str, split: str, *, data_dir: str | None = None, local_hint: str = "data",
                download: bool = True, local_flag: str | None = None):
    """`tfds.data_source(name, split)` as a `TfdsSource`, downloading only when that can work.

    Args:
      name: tfds name, e.g. 'mnist', 'cifar10', 'imagenet2012'.
      split: tfds split name, e.g. 'train', 'test', 'validation'.
      data_dir: tfds data directory (default: tfds' own, ~/tensorflow_datasets or
        $TFDS_DATA_DIR).
      local_hint: what to name in the error message's local-files suggestion.
      download: prepare a missing dataset (array_record) when the download host is reachable.
      local_flag: the caller's flag for local files, named in the error message.

    Raises:
      ValueError: in seconds, when the dataset is not prepared in `data_dir` and cannot be
        downloaded (or is prepared in a format without random access, such as tfrecord).
    """
    import tensorflow_datasets as tfds

    try:
        return _open(tfds, name, split, data_dir)
    except Exception as e:  # tfds raises several types here; diagnose below, chain the original
        builder = tfds.builder(name, data_dir=data_dir)
        if builder.is_prepared():
            raise ValueError(
                f"tfds dataset {name!r} at {builder.data_dir} cannot be read with random access "
                f"({e}); prepare it with --file_format=array_record"
            ) from e
        if not (download and network_reachable()):
            raise ValueError(not_prepared_message(name, str(builder.data_dir), local_hint,
                                                  local_flag)) from e
        builder.download_and_prepare(file_format="array_record")
    return _open(tfds, name, split, data_dir)


def _open(tfds, name: str, split: str, data_dir: str | None) -> TfdsSource:
    data_source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    return TfdsSource(data_source, name=f"{name}:{split}")
