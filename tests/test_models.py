"""Model zoo: parameters and names against PyTorch definitions, forward, BatchNorm modes, inits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn as tnn

from addernet_jax.layers import Adder2D
from addernet_jax.models import create_model, get_model_info, list_models
from addernet_jax.opcount import param_count

# ---------------------------------------------------------------------------------------------
# PyTorch definitions following ADDERNET.md 5 (structure only: parameters and names, no forward).


class TorchAdder2d(tnn.Module):
    """The official adder.py layer's parameters: the filters (O, I, k, k), named `adder` there
    (its optional bias `b` is off in every official model)."""

    def __init__(self, cin, cout, k, stride=1, padding=0):
        super().__init__()
        self.stride, self.padding = stride, padding
        self.adder = tnn.Parameter(torch.empty(cout, cin, k, k))


def torch_layer(adder, cin, cout, k, stride=1, padding=0):
    if adder:
        return TorchAdder2d(cin, cout, k, stride, padding)
    return tnn.Conv2d(cin, cout, k, stride, padding, bias=False)


class TorchBasicBlock(tnn.Module):
    expansion = 1

    def __init__(self, adder, cin, planes, stride):
        super().__init__()
        self.conv1 = torch_layer(adder, cin, planes, 3, stride, 1)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = torch_layer(adder, planes, planes, 3, 1, 1)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = tnn.Sequential(
                torch_layer(adder, cin, planes, 1, stride), tnn.BatchNorm2d(planes)
            )


class TorchBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, adder, cin, planes, stride):
        super().__init__()
        self.conv1 = torch_layer(adder, cin, planes, 1)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = torch_layer(adder, planes, planes, 3, stride, 1)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv3 = torch_layer(adder, planes, planes * 4, 1)
        self.bn3 = tnn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = tnn.Sequential(
                torch_layer(adder, cin, planes * 4, 1, stride), tnn.BatchNorm2d(planes * 4)
            )


class TorchResNet(tnn.Module):
    """resnet20.py (imagenet=False) and resnet50.py (imagenet=True) layouts."""

    def __init__(self, adder, block, layers, num_classes, imagenet):
        super().__init__()
        widths = (64, 128, 256, 512) if imagenet else (16, 32, 64)
        cin = widths[0]
        self.conv1 = tnn.Conv2d(3, cin, 7 if imagenet else 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(cin)
        for index, (planes, blocks) in enumerate(zip(widths, layers)):
            stage = []
            for i in range(blocks):
                stage.append(block(adder, cin, planes, 2 if (i == 0 and index > 0) else 1))
                cin = planes * block.expansion
            setattr(self, f"layer{index + 1}", tnn.Sequential(*stage))
        self.fc = tnn.Conv2d(cin, num_classes, 1, bias=imagenet)
        self.bn2 = tnn.BatchNorm2d(num_classes)


class TorchVGGSmall(tnn.Module):
    def __init__(self, adder, num_classes):
        super().__init__()
        self.conv0 = tnn.Conv2d(3, 128, 3, padding=1, bias=False)
        self.bn0 = tnn.BatchNorm2d(128)
        for i, (cin, cout) in enumerate(
            ((128, 128), (128, 256), (256, 256), (256, 512), (512, 512))
        ):
            setattr(self, f"conv{i + 1}", torch_layer(adder, cin, cout, 3, 1, 1))
            setattr(self, f"bn{i + 1}", tnn.BatchNorm2d(cout))
        self.fc = tnn.Linear(8192, num_classes)


class TorchLeNet5(tnn.Module):
    def __init__(self, adder, num_classes):
        super().__init__()
        self.conv1 = tnn.Conv2d(1, 6, 5, padding=2, bias=False)
        self.bn1 = tnn.BatchNorm2d(6)
        self.conv2 = torch_layer(adder, 6, 16, 5)
        self.bn2 = tnn.BatchNorm2d(16)
        self.fc1 = torch_layer(adder, 400, 120, 1)
        self.bn3 = tnn.BatchNorm2d(120)
        self.fc2 = torch_layer(adder, 120, 84, 1)
        self.bn4 = tnn.BatchNorm2d(84)
        self.fc3 = tnn.Linear(84, num_classes)


def torch_model(name, adder, num_classes):
    cifar = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9}
    imagenet = {
        "resnet18": (TorchBasicBlock, (2, 2, 2, 2)),
        "resnet34": (TorchBasicBlock, (3, 4, 6, 3)),
        "resnet50": (TorchBottleneck, (3, 4, 6, 3)),
    }
    with torch.device("meta"):  # shapes only, nothing allocated
        if name in cifar:
            return TorchResNet(adder, TorchBasicBlock, [cifar[name]] * 3, num_classes, False)
        if name in imagenet:
            return TorchResNet(adder, *imagenet[name], num_classes, True)
        if name == "vgg_small":
            return TorchVGGSmall(adder, num_classes)
        return TorchLeNet5(adder, num_classes)


# The table a checkpoint converter needs: PyTorch name suffix -> ours, and the layout change.
BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
KERNEL_NAMES = ("weight", "adder")  # nn.Conv2d / nn.Linear weight, official adder2d filters


def torch_entries(model):
    """{our path: our shape} for every parameter and BN statistic of a PyTorch model."""
    kinds = {name: type(m) for name, m in model.named_modules()}
    entries = {}
    for key, value in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        shape = tuple(value.shape)
        if kinds[owner] is tnn.BatchNorm2d:
            leaf = BN_NAMES[leaf]
        elif leaf in KERNEL_NAMES:
            leaf = "kernel"
            # OIHW -> HWIO; Linear (out, in) -> (in, out)
            shape = shape[2:] + shape[1::-1] if len(shape) == 4 else shape[::-1]
        entries[f"{owner}.{leaf}"] = shape
    return entries


def our_entries(model):
    return {
        ".".join(map(str, path)): tuple(v.shape)
        for path, v in nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)))
    }


def abstract_model(name, variant="adder", num_classes=None):
    """The model with shapes only. The 'reference' adder op: cheapest to trace, same shapes."""
    num_classes = num_classes or get_model_info(name).num_classes
    return nnx.eval_shape(
        lambda: create_model(
            name, num_classes=num_classes, variant=variant, impl="reference", rngs=nnx.Rngs(0)
        )
    )


# The paper's zoo, which has the PyTorch definitions above; the models added since (ShiftAddNet's
# VGG19-small, LeNet++, the SR networks) are checked by their own test files.
OFFICIAL_MODELS = ["resnet20", "resnet32", "resnet44", "resnet56", "vgg_small", "lenet5",
                   "resnet18", "resnet34", "resnet50"]
CLASSIFIERS = [name for name in list_models() if get_model_info(name).task == "classification"]

CASES = [
    (name, classes)
    for name in OFFICIAL_MODELS
    for classes in ((1000, 10) if get_model_info(name).num_classes == 1000 else (10, 100))
]


@pytest.mark.parametrize("variant", ["adder", "cnn"])
@pytest.mark.parametrize("name,num_classes", CASES)
def test_parameters_match_pytorch_definition(name, num_classes, variant):
    ours = abstract_model(name, variant, num_classes)
    reference = torch_model(name, variant == "adder", num_classes)
    assert param_count(ours) == sum(p.numel() for p in reference.parameters())
    # Same names (mirroring the official modules) and shapes, up to the layout table above.
    assert our_entries(ours) == torch_entries(reference)


def test_known_parameter_counts():
    # ResNet-20 0.27M (official README); torchvision ResNet-18/50 + the logit BN's 2 * 1000.
    expected = {"resnet20": 272_484, "resnet18": 11_689_512 + 2000, "resnet50": 25_557_032 + 2000}
    for name, count in expected.items():
        assert param_count(abstract_model(name)) == count


@nnx.jit
def forward(model, x):
    return model(x)


@pytest.fixture(scope="module")
def resnet20():
    """Concrete ResNet-20s. The adder one runs the 'reference' op: at batch 2 it compiles much
    faster than the default 'shifted' one (the ops' own tests compare the two)."""
    return {
        v: create_model("resnet20", num_classes=10, variant=v, impl="reference", rngs=nnx.Rngs(0))
        for v in ("adder", "cnn")
    }


@pytest.mark.parametrize("variant", ["adder", "cnn"])
def test_forward_runs(resnet20, variant):
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    model = resnet20[variant]
    model.eval()
    y = forward(model, x)
    assert y.shape == (2, 10) and bool(jnp.all(jnp.isfinite(y)))
    lenet = create_model("lenet5", num_classes=10, variant=variant, rngs=nnx.Rngs(0))  # 'auto' op
    y = forward(lenet, jax.random.normal(jax.random.key(2), (2, 28, 28, 1)))
    assert y.shape == (2, 10) and bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize("variant", ["adder", "cnn"])
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_output_shapes(name, variant):
    # Traced abstractly: the ImageNet models on 64x64 (global pooling makes any size work).
    height, width, channels = get_model_info(name).input_shape
    height, width = min(height, 64), min(width, 64)
    model = abstract_model(name, variant, num_classes=7)
    y = nnx.eval_shape(lambda m, x: m(x), model, jnp.zeros((3, height, width, channels)))
    assert y.shape == (3, 7)


def batch_norms(model):
    return [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]


def test_train_and_eval_modes(resnet20):
    model = resnet20["cnn"]
    x = 3.0 + jax.random.normal(jax.random.key(3), (4, 32, 32, 3))
    model.eval()
    assert all(bn.use_running_average for bn in batch_norms(model))
    before = nnx.clone(nnx.state(model, nnx.BatchStat))
    y_eval = model(x)
    unchanged = nnx.state(model, nnx.BatchStat)
    assert all(jax.tree.leaves(jax.tree.map(jnp.array_equal, before, unchanged)))
    model.train()
    assert not any(bn.use_running_average for bn in batch_norms(model))
    y_train = model(x)
    assert not np.allclose(y_eval, y_train, atol=1e-3)
    # Train mode normalises the logits with batch statistics: zero mean per class.
    np.testing.assert_allclose(jnp.mean(y_train, axis=0), 0.0, atol=1e-4)
    model.eval()


def test_running_statistics_use_pytorch_momentum(resnet20):
    model = nnx.clone(resnet20["cnn"])
    model.train()
    x = 2.0 + jax.random.normal(jax.random.key(4), (4, 32, 32, 3))
    stem = model.conv1(x)
    mean, var = jnp.mean(stem, axis=(0, 1, 2)), jnp.var(stem, axis=(0, 1, 2))
    old_mean, old_var = model.bn1.mean[...], model.bn1.var[...]
    model(x)
    # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch statistic.
    # (Flax updates the variance with the biased batch variance; ADDERNET.md U9.)
    np.testing.assert_allclose(
        model.bn1.mean[...], 0.9 * old_mean + 0.1 * mean, rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(model.bn1.var[...], 0.9 * old_var + 0.1 * var, rtol=1e-4)
    assert model.bn1.epsilon == 1e-5


def test_resnet20_structure():
    model = abstract_model("resnet20")
    adders = {
        ".".join(map(str, path)): m.kernel.shape
        for path, m in nnx.iter_modules(model)
        if isinstance(m, Adder2D)
    }
    expected = {}
    for stage, (cin, width) in enumerate(((16, 16), (16, 32), (32, 64)), start=1):
        for block in range(3):
            expected[f"layer{stage}.{block}.conv1"] = (3, 3, cin if block == 0 else width, width)
            expected[f"layer{stage}.{block}.conv2"] = (3, 3, width, width)
        if stage > 1:
            expected[f"layer{stage}.0.downsample.0"] = (1, 1, cin, width)
    assert adders == expected  # 18 adder 3x3 + 2 adder 1x1
    assert type(model.conv1) is nnx.Conv and model.conv1.kernel.shape == (3, 3, 3, 16)
    assert type(model.fc) is nnx.Conv and model.fc.kernel.shape == (1, 1, 64, 10)
    assert model.fc.bias is None and model.conv1.bias is None
    assert model.layer2[0].downsample[0].strides == (2, 2)
    assert model.layer1[0].downsample is None
    cnn = abstract_model("resnet20", "cnn")
    assert not any(isinstance(m, Adder2D) for _, m in nnx.iter_modules(cnn))


def test_multiplicative_layers_per_model():
    expected = {
        "resnet50": ({"conv1", "fc"}, 3 * 16 + 4),
        "resnet18": ({"conv1", "fc"}, 2 * 8 + 3),
        "vgg_small": ({"conv0", "fc"}, 5),
        "lenet5": ({"conv1", "fc3"}, 3),
    }
    for name, (multiplicative, num_adders) in expected.items():
        model = abstract_model(name)
        layers = [
            (".".join(map(str, p)), m)
            for p, m in nnx.iter_modules(model)
            if isinstance(m, (Adder2D, nnx.Conv, nnx.Linear))
        ]
        assert {p for p, m in layers if not isinstance(m, Adder2D)} == multiplicative, name
        assert sum(isinstance(m, Adder2D) for _, m in layers) == num_adders, name


def test_inits(resnet20):
    model = resnet20["adder"]
    stem = model.conv1.kernel[...]
    assert float(jnp.max(jnp.abs(stem))) <= 27**-0.5  # PyTorch default: U(+-1/sqrt(fan_in))
    assert float(jnp.max(jnp.abs(model.fc.kernel[...]))) <= 64**-0.5
    adders = jnp.concatenate([block.conv2.kernel[...].ravel() for block in model.layer3])
    assert abs(float(jnp.std(adders)) - 1.0) < 0.02  # N(0, 1)
    assert all(float(jnp.min(bn.scale[...])) == 1.0 for bn in batch_norms(model))
    assert all(float(jnp.max(jnp.abs(bn.bias[...]))) == 0.0 for bn in batch_norms(model))

    resnet = create_model("resnet18", num_classes=100, variant="cnn", rngs=nnx.Rngs(0))
    # kaiming_normal(fan_out, relu): std sqrt(2 / (kh * kw * C_out)); fc bias U(+-1/sqrt(512)).
    np.testing.assert_allclose(jnp.std(resnet.conv1.kernel[...]), (2 / (49 * 64)) ** 0.5, rtol=0.05)
    np.testing.assert_allclose(
        jnp.std(resnet.layer3[1].conv2.kernel[...]), (2 / (9 * 256)) ** 0.5, rtol=0.05
    )
    bias = resnet.fc.bias[...]
    assert float(jnp.max(jnp.abs(bias))) <= 512**-0.5 and float(jnp.std(bias)) > 0.01


def test_registry():
    assert list_models() == [
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "vgg_small",
        "vgg19_small",
        "lenet5",
        "lenetpp",
        "resnet18",
        "resnet34",
        "resnet50",
        "vdsr",
        "edsr_baseline",
        "edsr",
    ]
    for name in CLASSIFIERS:
        model = abstract_model(name)
        assert isinstance(model, nnx.Module)
    with pytest.raises(ValueError, match="unknown model 'resnet21'.*resnet20.*lenet5.*resnet50"):
        create_model("resnet21", num_classes=10, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="variant"):
        create_model("resnet20", num_classes=10, variant="binary", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="6n\\+2"):
        from addernet_jax.models import CifarResNet

        CifarResNet(21, num_classes=10, rngs=nnx.Rngs(0))


def test_input_grad_reaches_every_adder_layer_and_only_the_backward():
    """config.model.input_grad (ADDERNET.md U10): 'sign' changes every adder layer's input
    gradient, not the forward."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 28, 28, 1)), jnp.float32)
    models = {grad: create_model("lenet5", num_classes=10, input_grad=grad, rngs=nnx.Rngs(0))
              for grad in ("hardtanh", "sign")}
    for grad, model in models.items():
        adders = [m for _, m in nnx.iter_modules(model) if isinstance(m, Adder2D)]
        assert len(adders) == 3 and {m.input_grad for m in adders} == {grad}
        model.eval()
    np.testing.assert_array_equal(models["sign"](x), models["hardtanh"](x))

    weights = jnp.asarray(np.random.default_rng(1).normal(size=(16, 10)), jnp.float32)

    def conv1_grad(model):  # training mode (batch statistics over 16 images, not 2)
        model.train()
        return nnx.grad(lambda m: (m(x) * weights).sum())(model).conv1.kernel[...]

    assert not np.allclose(conv1_grad(models["sign"]), conv1_grad(models["hardtanh"]))
    with pytest.raises(ValueError, match="unknown input_grad 'tanh'"):
        create_model("lenet5", num_classes=10, input_grad="tanh", rngs=nnx.Rngs(0))
