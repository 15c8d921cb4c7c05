"""How far a recipe's single runs are from what the recipe's models agree on (issue 14).

For classification workdirs trained on the same data (one recipe over seeds, or several recipes),
this prints each run's test top-1, the top-1 of the ensemble that averages the softmax of all
runs and of random subsets of k runs, and the test images that most runs get wrong. If even the
ensemble of many runs stays below a target, no choice of seed or averaging of one run's weights
will reach it: the model family itself has to change.

Each workdir's best checkpoint is used (chosen on the same test set, so every number here is
optimistic).

    python benchmarks/ensemble_ceiling.py --dataset mnist --local-path ../shared/data/mnist \
        runs/a runs/b runs/c ...
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import jax
import numpy as np
from timing import cpu_line

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from addernet_jax.loading import describe_checkpoint, load_checkpoint  # noqa: E402
from addernet_jax.tasks.classification import evaluation_set  # noqa: E402


def test_probabilities(workdir: str, dataset: str, local_path: str) -> tuple[np.ndarray, ...]:
    """(softmax probabilities, labels) of the best checkpoint of `workdir` on the test split."""
    model = load_checkpoint(describe_checkpoint(workdir)).model
    model.eval()
    data, _ = evaluation_set(dataset, source="local" if local_path else "tfds",
                             local_path=local_path or None, batch_size=500)
    probabilities, labels = [], []
    for batch in data.loader:
        keep = np.asarray(batch["mask"], bool)
        probabilities.append(np.asarray(jax.nn.softmax(model(batch["image"])))[keep])
        labels.append(np.asarray(batch["label"])[keep])
    return np.concatenate(probabilities), np.concatenate(labels)


def top1(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return 100.0 * float(np.mean(probabilities.argmax(-1) == labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdirs", nargs="+", help="classification training workdirs")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--local-path", default="", help="local dataset files (else tfds)")
    parser.add_argument("--subsets", default="2,3,5", help="ensemble sizes k to sample")
    parser.add_argument("--draws", type=int, default=200, help="random subsets per size")
    args = parser.parse_args()
    print(cpu_line())

    runs = {}
    labels = None
    for workdir in args.workdirs:
        runs[workdir], labels = test_probabilities(workdir, args.dataset, args.local_path)
        print(f"{workdir}: top-1 {top1(runs[workdir], labels):.2f}%")
    stacked = np.stack(list(runs.values()))
    singles = [top1(p, labels) for p in stacked]
    print(f"single runs: mean {np.mean(singles):.2f}% (min {min(singles):.2f}, max "
          f"{max(singles):.2f}) over {len(singles)} runs, {len(labels)} test images")
    print(f"ensemble of all {len(stacked)}: {top1(stacked.mean(0), labels):.2f}%")
    rng = np.random.default_rng(0)
    for k in (int(v) for v in args.subsets.split(",")):
        if k > len(stacked):
            continue
        accuracies = [top1(stacked[rng.choice(len(stacked), k, replace=False)].mean(0), labels)
                      for _ in range(args.draws)]
        print(f"ensembles of {k}: mean {np.mean(accuracies):.2f}% (min {min(accuracies):.2f}, "
              f"max {max(accuracies):.2f}) over {args.draws} random subsets")

    wrong = collections.Counter(
        int(i) for p in stacked for i in np.nonzero(p.argmax(-1) != labels)[0])
    majority = sorted(i for i, count in wrong.items() if 2 * count >= len(stacked))
    floor = 100 * (1 - len(majority) / len(labels))
    print(f"test images wrong in at least half of the runs: {len(majority)} (a model that gets "
          f"all of them wrong is at {floor:.2f}%): {majority}")
    per_run = [len(set(np.nonzero(p.argmax(-1) != labels)[0].tolist()) & set(majority))
               for p in stacked]
    print(f"of those, each run gets wrong: {per_run}")


if __name__ == "__main__":
    main()
