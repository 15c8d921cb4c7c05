"""Operation / parameter / energy counter against hand counts, and the count_ops.py CLI."""

import importlib.util
import json
from pathlib import Path

import pytest
from flax import nnx

from addernet_jax.opcount import Counts, EnergyTable, compare_variants, count_model, count_ops


def load_cli():
    path = Path(__file__).resolve().parents[1] / "count_ops.py"
    spec = importlib.util.spec_from_file_location("count_ops", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def resnet20():
    return compare_variants("resnet20")


def resnet20_macs_by_hand(num_blocks=3):
    """Multiply-accumulates of every conv / adder / fc of CIFAR ResNet-(6n+2), per image:
    output H * W * C_out times kh * kw * C_in."""
    macs = {"conv1": 32 * 32 * 16 * (3 * 3 * 3)}
    for stage, (size, cin, width) in enumerate(((32, 16, 16), (16, 16, 32), (8, 32, 64)), 1):
        for block in range(num_blocks):
            first_in = cin if block == 0 else width
            macs[f"layer{stage}.{block}.conv1"] = size * size * width * (3 * 3 * first_in)
            macs[f"layer{stage}.{block}.conv2"] = size * size * width * (3 * 3 * width)
        if stage > 1:  # 1x1 projection with stride 2
            macs[f"layer{stage}.0.downsample.0"] = size * size * width * (1 * 1 * cin)
    macs["fc"] = 1 * 1 * 10 * (1 * 1 * 64)
    return macs


def test_resnet20_hand_count(resnet20):
    macs = resnet20_macs_by_hand()
    # 442,368 + 6 x 2,359,296 + (1,179,648 + 5 x 2,359,296 + 131,072) x 2 + 640
    assert sum(macs.values()) == 40_813_184  # 40.81M (ADDERNET.md 5.2 / U8)
    for variant, count in resnet20.items():
        layers = {l.name: l for l in count.layers if l.kind != "bn"}
        assert {name: l.macs for name, l in layers.items()} == macs
        adders = sorted(name for name, l in layers.items() if l.kind == "adder")
        if variant == "adder":
            assert len(adders) == 20 and "conv1" not in adders and "fc" not in adders
        else:
            assert adders == []
    stem_and_fc = macs["conv1"] + macs["fc"]  # 443,008 multiplicative in both
    adder_macs = 40_813_184 - stem_and_fc
    assert resnet20["cnn"].paper_total() == Counts(40_813_184, 40_813_184, 270_896)
    assert resnet20["adder"].paper_total() == Counts(
        stem_and_fc, stem_and_fc + 2 * adder_macs, 270_896
    )
    # BN: one mul + one add per output element: stem 32*32*16, layer1 6 x 32*32*16,
    # layer2 (6 + 1) x 16*16*32, layer3 (6 + 1) x 8*8*64, logits 10.
    bn = 32 * 32 * 16 + 6 * 32 * 32 * 16 + 7 * 16 * 16 * 32 + 7 * 8 * 8 * 64 + 10
    assert bn == 200_714
    groups = resnet20["adder"].groups()
    assert list(groups) == ["stem", "layer1", "layer2", "layer3", "head", "batchnorm"]
    assert groups["batchnorm"].mults == groups["batchnorm"].adds == bn
    assert groups["stem"] == Counts(macs["conv1"], macs["conv1"], 3 * 3 * 3 * 16)
    assert groups["layer1"] == Counts(0, 2 * 6 * 32 * 32 * 16 * 144, 6 * 3 * 3 * 16 * 16)
    total = resnet20["adder"].total()
    assert total.mults == stem_and_fc + bn and total.adds == stem_and_fc + 2 * adder_macs + bn
    assert total.params == 272_484  # BN gamma / beta included, running statistics not


def test_resnet32_hand_count():
    macs = resnet20_macs_by_hand(num_blocks=5)
    assert sum(macs.values()) == 69_124_736  # the paper's 69.12M (ADDERNET.md 5.2)
    count = count_model("resnet32", variant="cnn")
    assert {l.name: l.macs for l in count.layers if l.kind != "bn"} == macs
    assert count.paper_total().mults == 69_124_736


def test_lenet5_hand_count():
    counts = compare_variants("lenet5")
    macs = {
        "conv1": 28 * 28 * 6 * (5 * 5 * 1),  # pad 2 keeps 28x28
        "conv2": 10 * 10 * 16 * (5 * 5 * 6),  # 14x14 after the pool, no pad -> 10x10
        "fc1": 120 * 400,
        "fc2": 84 * 120,
        "fc3": 10 * 84,
    }
    params = {
        "conv1": 5 * 5 * 1 * 6,
        "conv2": 5 * 5 * 6 * 16,
        "fc1": 400 * 120,
        "fc2": 120 * 84,
        "fc3": 84 * 10 + 10,
    }
    bn = {"bn1": 28 * 28 * 6, "bn2": 10 * 10 * 16, "bn3": 120, "bn4": 84}
    assert sum(macs.values()) == 416_520 and sum(bn.values()) == 6_508
    adders = {"conv2", "fc1", "fc2"}
    for variant, count in counts.items():
        layers = {l.name: l for l in count.layers}
        assert {n: l.macs for n, l in layers.items()} == {**macs, **bn}
        for name, m in macs.items():
            bias = 10 if name == "fc3" else 0  # only the classifier has a bias
            if variant == "adder" and name in adders:
                assert layers[name].counts == Counts(0, 2 * m, params[name])
            else:
                assert layers[name].counts == Counts(m, m + bias, params[name])
        for name, n in bn.items():
            assert layers[name].counts == Counts(n, n, 2 * layers[name].out_shape[-1])
    adder_macs = macs["conv2"] + macs["fc1"] + macs["fc2"]
    assert counts["cnn"].paper_total() == Counts(416_520, 416_520, 61_480)
    assert counts["adder"].paper_total() == Counts(118_440, 118_440 + 2 * adder_macs, 61_480)
    assert counts["adder"].total() == Counts(118_440 + 6_508, 714_600 + 10 + 6_508, 61_932)


@pytest.mark.parametrize("name", ["resnet20", "vgg_small", "lenet5", "resnet50"])
def test_adder_adds_are_twice_cnn_mults(name):
    counts = compare_variants(name)
    pairs = list(zip(counts["adder"].layers, counts["cnn"].layers, strict=True))
    assert any(a.kind == "adder" for a, _ in pairs)
    for adder, cnn in pairs:
        assert (adder.name, adder.macs, adder.counts.params) == (
            cnn.name,
            cnn.macs,
            cnn.counts.params,
        )
        if adder.kind == "adder":
            assert cnn.kind == "conv" and adder.counts.mults == 0
            assert adder.counts.adds == 2 * cnn.counts.mults
        else:
            assert adder.counts == cnn.counts
    paper_adder, paper_cnn = counts["adder"].paper_total(), counts["cnn"].paper_total()
    multiplicative = paper_adder.mults  # first conv and classifier only
    assert paper_adder.adds - multiplicative == 2 * (paper_cnn.mults - multiplicative)


def test_energy_arithmetic(resnet20):
    assert EnergyTable() == EnergyTable(0.9, 3.7, "45 nm fp32 (Horowitz, ISSCC 2014)")
    assert Counts(2, 3, 99).energy_pj(EnergyTable(add_pj=1.0, mul_pj=10.0)) == 23.0
    cnn = resnet20["cnn"].paper_total().energy_pj()
    assert cnn == pytest.approx(40_813_184 * (3.7 + 0.9))  # 187.74 uJ
    adder = resnet20["adder"].paper_total().energy_pj()
    assert adder == pytest.approx(443_008 * (3.7 + 0.9) + 2 * 40_370_176 * 0.9)  # 74.70 uJ


def test_input_size_and_classes():
    count = count_model("resnet18", variant="cnn", input_size=112, num_classes=100)
    layers = {l.name: l for l in count.layers}
    assert layers["conv1"].out_shape == (56, 56, 64)
    assert layers["conv1"].macs == 56 * 56 * 64 * (7 * 7 * 3)
    assert layers["fc"].counts == Counts(512 * 100, 512 * 100 + 100, 512 * 100 + 100)
    assert count.input_shape == (112, 112, 3)


def test_unknown_parameterised_layer_is_reported():
    class WithLayerNorm(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
            self.norm = nnx.LayerNorm(4, rngs=rngs)

        def __call__(self, x):
            return self.norm(self.conv(x))

    model = WithLayerNorm(nnx.Rngs(0))
    with pytest.raises(ValueError, match="hold 112 of the model's 120 parameters"):
        count_ops(model, (8, 8, 3))


def test_cli_table(capsys):
    assert load_cli().main(["--model", "resnet20"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split("|")[0].strip(): line.split("|")[1:] for line in out.splitlines() if "|" in line
    }
    assert list(rows)[2:] == [
        "stem",
        "layer1",
        "layer2",
        "layer3",
        "head",
        "batchnorm",
        "total",
        "paper",
    ]
    adder, cnn = (cells.split() for cells in rows["paper"])
    assert adder == ["443.01K", "81.18M", "270.90K", "74.704"]
    assert cnn == ["40.81M", "40.81M", "270.90K", "187.741"]
    assert "adder" in out.splitlines()[1] and "cnn" in out.splitlines()[1]


def test_cli_json(capsys):
    argv = [
        "--model",
        "resnet20",
        "--num-classes",
        "100",
        "--energy-add",
        "1",
        "--energy-mul",
        "4",
        "--json",
    ]
    assert load_cli().main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input_shape"] == [32, 32, 3]
    cnn = report["variants"]["cnn"]["rows"]["paper"]
    mults = 40_813_184 - 640 + 6_400  # fc 64 -> 100
    assert cnn["mults"] == cnn["adds"] == mults
    assert cnn["energy_uj"] == pytest.approx(mults * 5 * 1e-6)
    layers = report["variants"]["adder"]["layers"]
    assert layers[0] == {
        "name": "conv1",
        "group": "stem",
        "kind": "conv",
        "in_shape": [32, 32, 3],
        "out_shape": [32, 32, 16],
        "macs": 442_368,
        "mults": 442_368,
        "adds": 442_368,
        "params": 432,
        "energy_uj": pytest.approx(2.21184),
    }


def test_cli_unknown_model(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_cli().main(["--model", "resnet21"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet21'" in err and "resnet20" in err and "lenet5" in err


def test_table_with_a_group_one_variant_lacks():
    # AdderSR units have BatchNorm, the CNN VDSR has none: the table shows a zero row there.
    from addernet_jax.opcount import format_comparison

    counts = compare_variants("vdsr", input_size=24)
    table = format_comparison("vdsr", counts)
    batchnorm = next(line for line in table.splitlines() if line.startswith("batchnorm"))
    adder_cells, cnn_cells = batchnorm.split("|")[1:3]
    assert adder_cells.split()[0] != "0" and cnn_cells.split()[:3] == ["0", "0", "0"]
