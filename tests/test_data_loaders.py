"""grain loaders: shuffling, epochs, process shards, exact resume, padded evaluation."""

import itertools

import grain
import numpy as np
import pytest

from addernet_jax.data import (
    ArraySource,
    get_source,
    get_transforms,
    make_eval_loader,
    make_train_loader,
)
from addernet_jax.data import transforms as T


def decode_index(batch) -> list[int]:
    """The record indices of a batch of `indexed_source` images (untransformed)."""
    image = batch["image"].astype(int)
    return (image[:, 0, 0, 0] * 256 + image[:, 0, 1, 0]).tolist()


def take(loader_or_iterator, n):
    return list(itertools.islice(loader_or_iterator, n))


@pytest.fixture
def random_source():
    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    return ArraySource(images, np.arange(40) % 4)


AUGMENT = [
    T.RandomCrop(8, padding=2),
    T.RandomHorizontalFlip(),
    T.Normalize((0.5,) * 3, (0.25,) * 3),
]


def _train(source, **kwargs):
    args = {"global_batch_size": 8, "seed": 0, "transforms": AUGMENT, **kwargs}
    return make_train_loader(source, **args)


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_train_loader_is_deterministic_per_seed(random_source):
    first = take(_train(random_source, seed=1), 6)
    _assert_same_batches(first, take(_train(random_source, seed=1), 6))
    other = take(_train(random_source, seed=2), 6)
    assert not np.array_equal(first[0]["image"], other[0]["image"])
    assert first[0]["image"].shape == (8, 8, 8, 3) and first[0]["image"].dtype == np.float32
    assert first[0]["label"].dtype == np.int32


def test_train_loader_epochs_are_fresh_permutations(indexed_source):
    batches = list(_train(indexed_source, global_batch_size=10, transforms=[], num_epochs=3))
    assert len(batches) == 30  # 103 // 10 = 10 steps per epoch, the remainder dropped
    epochs = [sum((decode_index(b) for b in batches[10 * e : 10 * e + 10]), []) for e in range(3)]
    for epoch in epochs:
        assert len(set(epoch)) == 100 and set(epoch) <= set(range(103))
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]


def test_process_shards_split_every_global_batch(indexed_source):
    whole = take(_train(indexed_source, global_batch_size=10, transforms=[]), 20)
    shards = [
        take(_train(indexed_source, global_batch_size=10, transforms=[], process_index=p,
                    process_count=2), 20)
        for p in range(2)
    ]  # fmt: skip
    seen = []
    for step, batch in enumerate(whole):
        local = [decode_index(shard[step]) for shard in shards]
        assert len(local[0]) == 5 and not set(local[0]) & set(local[1])
        # Process p holds rows [5p, 5p + 5) of the same global batch.
        assert local[0] + local[1] == decode_index(batch)
        seen += local[0] + local[1]
    assert len(set(seen[:100])) == 100  # one epoch, covered once by the two processes


def test_augmentation_does_not_depend_on_process_count(random_source):
    whole = take(_train(random_source), 3)
    half = take(_train(random_source, process_index=1, process_count=2), 3)
    for w, h in zip(whole, half, strict=True):
        np.testing.assert_array_equal(w["image"][4:], h["image"])


def test_resume_from_saved_state_sees_the_same_batches(random_source):
    uninterrupted = take(_train(random_source), 9)  # crosses the 5-step epoch boundary
    it = iter(_train(random_source))
    take(it, 4)
    state = it.get_state()
    resumed = iter(_train(random_source))
    resumed.set_state(state)
    _assert_same_batches(take(resumed, 5), uninterrupted[4:])


def test_resume_through_grain_orbax_handler(random_source, tmp_path):
    from grain.checkpoint import CheckpointHandler

    uninterrupted = take(_train(random_source, global_batch_size=4, num_epochs=2), 12)
    it = iter(_train(random_source, global_batch_size=4, num_epochs=2))
    take(it, 7)
    CheckpointHandler().save(tmp_path, item=it)
    restored = CheckpointHandler().restore(
        tmp_path, item=iter(_train(random_source, global_batch_size=4, num_epochs=2))
    )
    rest = list(restored)
    assert len(rest) == 20 - 7  # 2 epochs of 40 // 4 steps
    _assert_same_batches(rest[:5], uninterrupted[7:])


def test_worker_processes_do_not_change_batches(random_source):
    expected = take(_train(random_source), 6)
    it = iter(_train(random_source, worker_count=1))
    try:
        got = [{k: np.array(v) for k, v in b.items()} for b in take(it, 6)]
    finally:
        it.close()
    _assert_same_batches(got, expected)


def test_train_subset_is_balanced_and_fixed(indexed_source):
    batches = list(
        _train(indexed_source, global_batch_size=10, transforms=[], subset=50, num_epochs=1)
    )
    indices = sum((decode_index(b) for b in batches), [])
    assert sorted(indices) == list(range(50))  # labels are index % 10: 5 of each class
    other_seed = _train(indexed_source, global_batch_size=10, transforms=[], subset=50, seed=9)
    assert sorted(sum((decode_index(b) for b in take(other_seed, 5)), [])) == list(range(50))


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_loader_covers_every_example_once(indexed_source, process_count):
    indices, mask_total, num_batches = [], 0, []
    for p in range(process_count):
        batches = list(
            make_eval_loader(indexed_source, batch_size=8, transforms=[], process_index=p,
                             process_count=process_count)
        )  # fmt: skip
        num_batches.append(len(batches))
        for batch in batches:
            assert batch["image"].shape[0] == batch["mask"].shape[0] == 8 // process_count
            assert batch["mask"].dtype == np.bool_
            indices += [i for i, m in zip(decode_index(batch), batch["mask"], strict=True) if m]
            mask_total += int(batch["mask"].sum())
    assert num_batches == [13] * process_count  # ceil(103 / 8), the same on every process
    assert mask_total == 103 and sorted(indices) == list(range(103))


def test_eval_loader_is_in_order_and_reiterable(indexed_source):
    loader = make_eval_loader(indexed_source, batch_size=10, transforms=[])
    first = list(loader)
    assert decode_index(first[0]) == list(range(10))
    assert first[-1]["mask"].tolist() == [True] * 3 + [False] * 7
    _assert_same_batches(first, list(loader))


def test_eval_loader_rejects_random_transforms(indexed_source):
    with pytest.raises(ValueError, match="deterministic"):
        make_eval_loader(indexed_source, batch_size=8, transforms=[T.RandomHorizontalFlip()])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"global_batch_size": 9, "process_count": 2}, "not divisible by 2 processes"),
        ({"process_index": 2, "process_count": 2}, r"process_index 2 not in \[0, 2\)"),
        ({"global_batch_size": 128}, "do not fill one batch of 128"),
    ],
)
def test_train_loader_argument_errors(random_source, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _train(random_source, **kwargs)


def test_real_cifar10_jpeg_train_batches(cifar10_jpeg_dir):
    source = get_source("cifar10", "train", source="local", local_path=cifar10_jpeg_dir)
    loader = make_train_loader(
        source, global_batch_size=64, seed=0, subset=10000,
        transforms=get_transforms("cifar10", train=True), process_index=1, process_count=2,
    )  # fmt: skip
    batches = take(loader, 2)
    assert batches[0]["image"].shape == (32, 32, 32, 3)
    assert set(np.concatenate([b["label"] for b in batches]).tolist()) <= set(range(10))
    # Normalised with the CIFAR statistics: roughly zero mean, unit spread (padding included).
    assert -1 < batches[0]["image"].mean() < 0.5 and 0.7 < batches[0]["image"].std() < 1.6


def test_real_mnist_eval_mask_counts_exactly(mnist_dir):
    source = get_source("mnist", "test", source="local", local_path=mnist_dir)
    batches = list(
        make_eval_loader(source, batch_size=256, transforms=get_transforms("mnist", train=False))
    )
    assert len(batches) == 12 and batches[0]["image"].shape == (256, 28, 28, 1)
    assert sum(int(b["mask"].sum()) for b in batches) == 3000
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(labels, source.labels)


def test_loaders_are_grain_datasets(random_source):
    assert isinstance(_train(random_source), grain.IterDataset)
