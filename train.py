"""Train an AdderNet (or its CNN baseline) from a config file.

    python train.py --config configs/mnist_lenet5.py --workdir runs/mnist_lenet5
    python train.py --config configs/cifar10_resnet20.py:cnn --workdir runs/r20_cnn \
        --config.data.source=local --config.data.local_path=../shared/data/cifar10-jpeg

Running the same command again resumes from the workdir's latest checkpoint. Multi-host: pass
--coordinator_address/--num_processes/--process_id (or set $ADDERNET_COORDINATOR etc.).
"""

from absl import app, flags
from ml_collections import config_flags

from addernet_jax.training import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the summary.")
flags.DEFINE_string("coordinator_address", "", "Multi-host: host:port of process 0.")
flags.DEFINE_integer("num_processes", 0, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", -1, "Multi-host: this process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    return cli.run_training(_CONFIG.value, FLAGS.workdir, FLAGS.coordinator_address,
                            FLAGS.num_processes, FLAGS.process_id)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags_or_exit)
