"""The figure commands (plot_curves.py, plot_features.py, plot_ops.py) and LeNet++.

Each command runs in-process on tiny inputs and must write a PNG of the documented pixel size;
bad input must give a one-line error and the documented exit status (2 usage, 3 failed run).
plot_features.py embeds the real MNIST test images of ../shared.
"""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from addernet_jax.cli import plot_curves, plot_features, plot_ops
from addernet_jax.figures import class_statistics, extract_features
from addernet_jax.figures.curves import read_run
from addernet_jax.models import create_model, model_spec
from addernet_jax.opcount import count_model
from addernet_jax.runtime.checkpoints import save_model_checkpoint

DPI = 40


def png_size(path) -> tuple[int, int]:
    """(width, height) of a PNG file, after checking that it is one."""
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # decodes every chunk: a truncated file fails here
        return image.size


def one_line_error(capsys, program: str, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"{program}: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def write_run(workdir, records, *, task="classification", steps=None, epochs=None):
    workdir.mkdir(parents=True)
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (workdir / "config.json").write_text(json.dumps({"task": task}))
    if steps is not None:
        (workdir / "summary.json").write_text(json.dumps({"steps": steps, "epochs": epochs}))
    return workdir


def classification_records(accuracy_shift=0.0):
    """Two epochs of 10 steps: train every 5 steps, test after each epoch."""
    records = []
    for step in (5, 10, 15, 20):
        records.append({"step": step, "split": "train", "time": step, "loss": 1.0 / step,
                        "accuracy": 0.5 + step / 50 + accuracy_shift, "learning_rate": 0.1,
                        "images_per_sec": 100.0})
        if step % 10 == 0:
            records.append({"step": step, "split": "test", "time": step, "top1": 0.6,
                            "top5": 0.9, "loss": 0.5, "count": 30})
    return records


# ---------------------------------------------------------------------------------------------
# plot_curves.py


def test_plot_curves_overlays_runs_with_the_tasks_metric(tmp_path, capsys):
    adder = write_run(tmp_path / "adder", classification_records(), steps=20, epochs=2)
    cnn = write_run(tmp_path / "cnn", classification_records(0.1), steps=20, epochs=2)
    out = tmp_path / "figs" / "curves.png"
    assert plot_curves.main(["--workdir", str(adder), "--workdir", str(cnn), "--output",
                             str(out), "--dpi", str(DPI)]) == 0
    # loss, accuracy, learning rate: 3 panels of 5 x 4 inches
    assert png_size(out) == (3 * 5 * DPI, 4 * DPI)
    assert "wrote" in capsys.readouterr().out


def test_curves_read_epochs_and_the_best_metric_from_the_records(tmp_path):
    run = read_run(write_run(tmp_path / "a", classification_records(), steps=20, epochs=2))
    assert run.steps_per_epoch == 10
    assert run.series("test", "top1", per_epoch=True) == ([1.0, 2.0], [0.6, 0.6])
    from addernet_jax.figures.curves import _panels

    names = [name for name, _ in _panels([run], None)]
    assert names == ["loss", "accuracy", "learning_rate"]
    series = dict(_panels([run], None))["accuracy"]["a"]
    assert series == (("train", "accuracy"), ("test", "top1"))


def test_plot_curves_any_recorded_metric_and_the_step_axis(tmp_path):
    records = [{"step": s, "split": split, "time": 0, "loss": 0.1, "psnr": 30 + s}
               for s in (1, 2, 3) for split in ("train", "Set5")]
    sr = write_run(tmp_path / "sr", records, task="no_such_task")  # no summary: step axis
    out = tmp_path / "sr.png"
    assert plot_curves.main(["--workdir", str(sr), "--metric", "psnr", "--output", str(out),
                             "--dpi", str(DPI)]) == 0
    assert png_size(out) == (2 * 5 * DPI, 4 * DPI)  # loss and psnr; no learning rate recorded
    default = tmp_path / "default.png"  # an unknown task: the first recorded metric
    assert plot_curves.main(["--workdir", str(sr), "--output", str(default), "--dpi",
                             str(DPI)]) == 0
    assert png_size(default) == (2 * 5 * DPI, 4 * DPI)


def test_plot_curves_bad_input(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "x.png")
    assert plot_curves.main(["--workdir", str(empty), "--output", out]) == 2
    one_line_error(capsys, "plot_curves.py", str(empty), "no metrics.jsonl")

    run = write_run(tmp_path / "run", classification_records(), steps=20, epochs=2)
    assert plot_curves.main(["--workdir", str(run), "--metric", "psnr", "--output", out]) == 2
    one_line_error(capsys, "plot_curves.py", "'psnr'", "top1")

    assert plot_curves.main(["--workdir", str(tmp_path / "missing"), "--output", out]) == 2
    one_line_error(capsys, "plot_curves.py", "does not exist")

    assert plot_curves.main(["--workdir", str(run), "--output", str(tmp_path / "x.jpg")]) == 2
    one_line_error(capsys, "plot_curves.py", ".png")

    (run / "metrics.jsonl").write_text('{"step": 1, "split": "train"}\nnot json\n')
    assert plot_curves.main(["--workdir", str(run), "--output", out]) == 3
    one_line_error(capsys, "plot_curves.py", "line 2")

    (run / "metrics.jsonl").write_text("")
    assert plot_curves.main(["--workdir", str(run), "--output", out]) == 2
    one_line_error(capsys, "plot_curves.py", "no records")
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------------------------------------
# plot_ops.py


def test_plot_ops_writes_the_chart(tmp_path, capsys):
    out = tmp_path / "ops.png"
    assert plot_ops.main(["--model", "lenet5", "--output", str(out), "--dpi", str(DPI)]) == 0
    assert png_size(out) == (11 * DPI, int(4.5 * DPI))
    shifts = tmp_path / "shifts.png"  # a kind with shifts, priced
    assert plot_ops.main(["--model", "lenet5", "--variants", "adder,deepshift",
                          "--energy-shift", "0.1", "--counts", "paper", "--output", str(shifts),
                          "--dpi", str(DPI)]) == 0
    assert png_size(shifts) == (11 * DPI, int(4.5 * DPI))


def test_plot_ops_energy_is_the_counters(tmp_path):
    from addernet_jax.figures.ops import energy_parts
    from addernet_jax.layers import Counts, EnergyTable

    parts = energy_parts(Counts(mults=10, adds=100, shifts=1000), EnergyTable(0.9, 3.7), 0.5)
    assert parts == pytest.approx({"mults": 37e-6, "adds": 90e-6, "shifts": 500e-6})
    assert "shifts" not in energy_parts(Counts(shifts=1), EnergyTable(), None)


def test_plot_ops_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        plot_ops.main(["--model", "no_such_model", "--output", str(tmp_path / "o.png")])
    assert exit_info.value.code == 2
    one_line_error(capsys, "plot_ops.py", "no_such_model")
    with pytest.raises(SystemExit) as exit_info:
        plot_ops.main(["--model", "lenet5", "--variants", "adder,nope", "--output", "o.png"])
    assert exit_info.value.code == 2
    one_line_error(capsys, "plot_ops.py", "nope")
    assert plot_ops.main(["--model", "lenet5", "--output", str(tmp_path / "o.svg")]) == 2
    one_line_error(capsys, "plot_ops.py", "must end in .png")


# ---------------------------------------------------------------------------------------------
# LeNet++ and plot_features.py


def test_lenetpp_shapes_parameters_and_operations():
    @nnx.jit
    def forward(model, x):
        features = model.features(x)
        return features, model.classify(features), model(x)

    for variant in ("adder", "cnn"):
        model = create_model("lenetpp", variant=variant, num_classes=10, rngs=nnx.Rngs(0))
        features, classified, logits = forward(model, jnp.ones((3, 28, 28, 1)))
        assert features.shape == (3, 2) and logits.shape == (3, 10)
        np.testing.assert_allclose(logits, classified, rtol=1e-6)
    kernels = sum(25 * cin * cout for cin, cout in
                  ((1, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)))
    batch_norm = 2 * (32 + 32 + 64 + 64 + 128 + 128)
    fcs = 1152 * 2 + 2 + 2 * 10 + 10
    prelus = 7
    counts = {v: count_model("lenetpp", variant=v).paper_total() for v in ("adder", "cnn")}
    assert counts["cnn"].params == kernels + fcs + prelus
    macs = (28 * 28 * 25 * (1 * 32 + 32 * 32) + 14 * 14 * 25 * (32 * 64 + 64 * 64)
            + 7 * 7 * 25 * (64 * 128 + 128 * 128))
    assert counts["cnn"].mults == macs + 1152 * 2 + 2 * 10
    first_conv = 28 * 28 * 25 * 32
    assert counts["adder"].mults == first_conv + 1152 * 2 + 2 * 10
    assert counts["adder"].adds == 2 * (macs - first_conv) + first_conv + 1152 * 2 + 2 * 10
    total = count_model("lenetpp", variant="cnn").total()
    assert total.params == kernels + fcs + prelus + batch_norm


class TinyFeatureModel(nnx.Module):
    """features = two pixel values; classify = a fixed linear map."""

    def __init__(self):
        self.w = nnx.Param(jnp.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]))

    def features(self, x):
        return x.reshape(x.shape[0], -1)[:, :2]

    def classify(self, features):
        return features @ self.w[...]


def test_extract_features_keeps_real_images_and_their_accuracy():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 4, 2, 2, 1)).astype(np.float32)
    labels = rng.integers(0, 3, size=(2, 4))
    mask = np.array([[True] * 4, [True, True, False, False]])
    batches = [{"image": images[i], "label": labels[i], "mask": mask[i]} for i in range(2)]
    result = extract_features(TinyFeatureModel(), batches, "tiny")
    flat = images.reshape(8, -1)[mask.reshape(-1)][:, :2]
    np.testing.assert_allclose(result.features, flat, rtol=1e-6)
    predicted = np.argmax(flat @ np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]), axis=-1)
    expected = float(np.mean(predicted == labels.reshape(-1)[mask.reshape(-1)]))
    assert result.accuracy == pytest.approx(expected)
    first5 = extract_features(TinyFeatureModel(), batches, "tiny", limit=5)
    np.testing.assert_allclose(first5.features, flat[:5], rtol=1e-6)
    assert first5.accuracy == pytest.approx(float(np.mean(
        predicted[:5] == labels.reshape(-1)[mask.reshape(-1)][:5])))


def test_class_statistics_separate_rays_from_clusters():
    rng = np.random.default_rng(0)
    norms = rng.uniform(1, 100, 500)  # class 0: a ray at 30 degrees, any length
    ray = np.stack([norms * math.cos(math.pi / 6), norms * math.sin(math.pi / 6)], axis=1)
    blob = rng.normal(size=(500, 2)) * 0.5 + np.array([10.0, -10.0])  # class 1: a cluster
    stats = class_statistics(np.concatenate([ray, blob]), np.repeat([0, 1], 500))
    assert stats[0]["angular_spread_deg"] < 1e-3
    assert stats[0]["norm_spread"] > 0.4 and stats[0]["relative_radius"] > 0.3
    assert stats[1]["relative_radius"] < 0.1 and stats[1]["angular_spread_deg"] < 5
    assert stats[1]["centre"] == pytest.approx([10.0, -10.0], abs=0.1)
    assert [s["count"] for s in stats] == [500, 500]


def save_model(path, name, variant, seed=0):
    model = create_model(name, variant=variant, num_classes=10, rngs=nnx.Rngs(seed))
    save_model_checkpoint(path, nnx.state(model), model_spec(name, variant, num_classes=10))
    return path


def test_plot_features_on_the_real_mnist_test_images(tmp_path, mnist_dir, capsys):
    # The first 300 test images (the whole split takes a minute per LeNet++ on 2 busy cores);
    # two CNN checkpoints: the feature code does not depend on the layer kind.
    first = save_model(tmp_path / "first", "lenetpp", "cnn")
    second = save_model(tmp_path / "second", "lenetpp", "cnn", seed=1)
    out = tmp_path / "features.png"
    assert plot_features.main(["--workdir", str(first), "--workdir", str(second),
                               "--local-path", str(mnist_dir), "--num-images", "300",
                               "--batch-size", "128", "--output", str(out), "--dpi", str(DPI),
                               "--json"]) == 0
    assert png_size(out) == (2 * 6 * DPI, int(5.5 * DPI))
    report = json.loads(capsys.readouterr().out)
    assert [m["checkpoint"] for m in report["models"]] == [str(first), str(second)]
    assert report["models"][0]["title"] == "CNN (lenetpp)"
    for model in report["models"]:
        assert sum(row["count"] for row in model["classes"]) == 300
        assert [row["class"] for row in model["classes"]] == list(range(10))
        assert 0.0 <= model["accuracy"] <= 1.0
    assert report["models"][0]["classes"] != report["models"][1]["classes"]


def test_plot_features_bad_input(tmp_path, mnist_dir, capsys):
    lenet5 = save_model(tmp_path / "lenet5", "lenet5", "cnn")
    out = str(tmp_path / "f.png")
    assert plot_features.main(["--workdir", str(lenet5), "--local-path", str(mnist_dir),
                               "--output", out]) == 2
    one_line_error(capsys, "plot_features.py", "no 2-D feature layer")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert plot_features.main(["--workdir", str(empty), "--local-path", str(mnist_dir),
                               "--output", out]) == 2
    one_line_error(capsys, "plot_features.py", str(empty))
    assert not (tmp_path / "f.png").exists()
