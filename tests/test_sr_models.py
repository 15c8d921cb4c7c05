"""AdderSR models: the learnable power activation (values and both gradients at and near zero),
its optimizer rules, the AdderSR unit, VDSR and EDSR (shapes, parameter counts, the layer map,
bicubic pre-upsampling, pixel shuffle, receptive radius), and their operation counts."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from flax import nnx

from addernet_jax.data.imresize import imresize
from addernet_jax.layers import Adder2D, param_count
from addernet_jax.layers.power import (
    GRAD_EPS,
    PowerActivation,
    PowerExponent,
    power_exponent_type,
    signed_power,
    signed_power_reference,
)
from addernet_jax.metrics import rgb_to_ycbcr, ycbcr_to_rgb
from addernet_jax.models import create_model, get_model_info, model_spec
from addernet_jax.models.sr import (
    EDSR,
    VDSR,
    AdderSRUnit,
    ConvUnit,
    bicubic_upsample,
    pixel_shuffle,
)
from addernet_jax.opcount import compare_variants
from addernet_jax.optim import apply_projections, make_transformation, weight_decay_mask

jax.config.update("jax_enable_x64", False)

POINTS = np.array([0.0, 1e-30, 1e-6, 1e-3, 1.0, 2.5, 1e4], np.float32)
ALPHAS = (0.1, 0.5, 1.0, 1.7, 3.0)


# ------------------------------------------------------------------------- power activation
@pytest.mark.parametrize("alpha", ALPHAS)
def test_power_values_at_and_near_zero(alpha):
    z = jnp.asarray(np.concatenate([POINTS, -POINTS[1:]]))
    ours = np.asarray(signed_power(z, jnp.float32(alpha)), np.float64)
    z64 = np.asarray(z, np.float64)
    expected = np.sign(z64) * np.abs(z64) ** alpha  # float64 truth, then rounded to float32
    np.testing.assert_allclose(ours, expected.astype(np.float32), rtol=2e-6, atol=0)
    assert ours[0] == 0.0 and np.all(np.isfinite(ours))
    nonzero = z != 0
    np.testing.assert_allclose(ours[nonzero], signed_power_reference(z, alpha)[nonzero],
                               rtol=2e-6)


def _grads(z, alpha):
    def f(z, a):
        return signed_power(z, a)

    dz = jax.vmap(jax.grad(f, argnums=0), (0, None))(z, alpha)
    da = jax.vmap(jax.grad(f, argnums=1), (0, None))(z, alpha)
    return np.asarray(dz, np.float64), np.asarray(da, np.float64)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_power_gradients_finite_everywhere_and_exact_above_eps(alpha):
    z = jnp.asarray(np.concatenate([POINTS, -POINTS[1:]]))
    dz, da = _grads(z, jnp.float32(alpha))
    assert np.all(np.isfinite(dz)) and np.all(np.isfinite(da))
    z64 = np.abs(np.asarray(z, np.float64))
    # d/dz = alpha |z|^(alpha - 1), held at its value at eps below eps.
    expected_dz = alpha * np.maximum(z64, GRAD_EPS) ** (alpha - 1)
    np.testing.assert_allclose(dz, expected_dz, rtol=1e-5)
    # d/dalpha = sign(z) |z|^alpha log|z|, 0 at z = 0 (its limit).
    with np.errstate(divide="ignore", invalid="ignore"):
        expected_da = np.where(z64 > 0, np.sign(np.asarray(z)) * z64**alpha * np.log(z64), 0.0)
    np.testing.assert_allclose(da, expected_da, rtol=1e-5, atol=1e-30)
    assert da[0] == 0.0


def test_power_gradients_match_autodiff_of_the_plain_formula_away_from_zero():
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.uniform(0.01, 50, (4, 5, 5, 3)) * rng.choice([-1, 1], (4, 5, 5, 3)),
                    jnp.float32)
    alpha = jnp.asarray([0.6, 1.0, 2.2], jnp.float32)  # per channel, broadcast over NHW
    cotangent = jnp.asarray(rng.normal(size=z.shape), jnp.float32)

    def loss(f):
        return lambda z, a: jnp.sum(f(z, a) * cotangent)

    ours = jax.grad(loss(signed_power), argnums=(0, 1))(z, alpha)
    plain = jax.grad(loss(signed_power_reference), argnums=(0, 1))(z, alpha)
    for a, b in zip(ours, plain):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5)
    assert ours[1].shape == (3,)


def test_power_activation_module_identity_at_init_per_channel_and_errors():
    x = jnp.abs(jax.random.normal(jax.random.key(0), (2, 4, 4, 8)))
    scalar = PowerActivation(8)
    assert scalar.alpha[...].shape == () and float(scalar.alpha[...]) == 1.0
    np.testing.assert_allclose(scalar(x), x, rtol=1e-6)
    per_channel = PowerActivation(8, per_channel=True, init=0.5)
    assert per_channel.alpha[...].shape == (8,)
    np.testing.assert_allclose(per_channel(x), jnp.sqrt(x), rtol=1e-5)
    with pytest.raises(ValueError, match="8 channels, input has shape"):
        per_channel(x[..., :3])
    with pytest.raises(ValueError, match="0 < lo < hi"):
        PowerActivation(8, clip=(0.0, 3.0))
    with pytest.raises(ValueError, match="num_features >= 1"):
        PowerActivation(0)


def test_power_exponent_rules_no_weight_decay_and_clip_projection():
    clipped = power_exponent_type((0.1, 3.0))
    assert issubclass(clipped, PowerExponent) and clipped is power_exponent_type((0.1, 3.0))
    assert power_exponent_type(None) is PowerExponent and not hasattr(PowerExponent, "project")
    assert PowerExponent.weight_decay is False and clipped.weight_decay is False

    class Net(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
            self.power = PowerActivation(2)

    net = Net()
    mask = weight_decay_mask(net)
    assert mask["power"]["alpha"] is False and mask["linear"]["kernel"] is True
    net.power.alpha[...] = jnp.float32(7.0)
    apply_projections(net)
    assert float(net.power.alpha[...]) == 3.0
    net.power.alpha[...] = jnp.float32(-1.0)
    apply_projections(net)
    assert float(net.power.alpha[...]) == pytest.approx(0.1)


def test_weight_decay_skips_alpha_in_the_optimizer():
    # A zero gradient with coupled decay 0.5 and lr 1: the kernel halves, alpha stays.
    class Net(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
            self.power = PowerActivation(2, init=2.0)

    net = Net()
    config = ml_collections.ConfigDict(dict(name="sgd", momentum=0.0, eta=0.2,
                                            weight_decay=0.5, nesterov=False))
    optimizer = nnx.Optimizer(net, make_transformation(net, 1.0, config), wrt=nnx.Param)
    kernel = np.asarray(net.linear.kernel[...])
    optimizer.update(net, jax.tree.map(jnp.zeros_like, nnx.state(net, nnx.Param)))
    np.testing.assert_allclose(net.linear.kernel[...], kernel * 0.5, rtol=1e-6)
    assert float(net.power.alpha[...]) == 2.0


# ------------------------------------------------------------------------------- the unit
def test_addersr_unit_order_adder_bn_shortcut_relu_power():
    unit = AdderSRUnit(4, variant="adder", impl="reference", per_channel_alpha=False,
                       alpha_clip=(0.1, 3.0), kernel_init=None, rngs=nnx.Rngs(0))
    assert isinstance(unit.layer, Adder2D) and unit.layer.kernel[...].shape == (3, 3, 4, 4)
    unit.power.alpha[...] = jnp.float32(0.5)
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 4))
    unit.train()
    out = unit(x)
    adder = unit.layer(x)
    mean, var = jnp.mean(adder, axis=(0, 1, 2)), jnp.var(adder, axis=(0, 1, 2))
    bn = (adder - mean) / jnp.sqrt(var + 1e-5)  # gamma 1, beta 0, batch statistics
    np.testing.assert_allclose(out, jnp.sqrt(jax.nn.relu(bn + x)), rtol=1e-4, atol=1e-5)


def test_conv_unit_is_the_original_conv_with_optional_relu():
    unit = ConvUnit(4, variant="cnn", impl="auto", relu=False,
                    kernel_init=jax.nn.initializers.normal(1.0), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (1, 5, 5, 4))
    np.testing.assert_allclose(unit(x), unit.layer(x))
    assert float(jnp.min(unit(x))) < 0


# ------------------------------------------------------------------------------ the models
def test_bicubic_upsample_equals_matlab_imresize_in_float():
    rng = np.random.default_rng(0)
    for shape, scale in (((7, 9, 3), 2), ((5, 6, 3), 3), ((4, 4, 1), 4)):
        image = rng.uniform(0, 255, shape)
        ours = bicubic_upsample(jnp.asarray(image[None], jnp.float32), scale)[0]
        np.testing.assert_allclose(ours, imresize(image, scale), rtol=0, atol=2e-3)


def test_pixel_shuffle_matches_torch():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5 * 9)).astype(np.float32)
    expected = torch.nn.PixelShuffle(3)(torch.from_numpy(x).permute(0, 3, 1, 2))
    ours = pixel_shuffle(jnp.asarray(x), 3)
    np.testing.assert_array_equal(ours, expected.permute(0, 2, 3, 1).numpy())


def test_ycbcr_round_trip():
    rgb = np.random.default_rng(0).uniform(0, 255, (5, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=2e-3)
    np.testing.assert_allclose(rgb_to_ycbcr(np.full((1, 3), 255.0))[0], [235, 128, 128],
                               atol=0.01)


@nnx.jit
def forward(model, x):
    return model(x)


def abstract(name, variant, **kwargs):
    return nnx.eval_shape(lambda: create_model(name, variant=variant, rngs=nnx.Rngs(0),
                                               impl="reference", **kwargs))


# Parameter counts of the published CNNs: VDSR 664,704 (20 bias-free 3x3 convs, 1 -> 64 ->
# 1 channels); EDSR-PyTorch's x2 baseline 1,369,859 and full 40,729,603 minus the biases of
# the convs that are units here (EDSR has them; our units are bias-free).
PUBLISHED = {"vdsr": 664_704, "edsr_baseline": 1_369_859 - 33 * 64,
             "edsr": 40_729_603 - 65 * 256}


@pytest.mark.parametrize("name", ["vdsr", "edsr_baseline", "edsr"])
def test_parameter_counts_and_the_adder_layer_map(name):
    cnn, adder = abstract(name, "cnn", scale=2), abstract(name, "adder", scale=2)
    assert param_count(cnn) == PUBLISHED[name]
    units = [m for _, m in nnx.iter_modules(adder) if isinstance(m, AdderSRUnit)]
    adders = [m for _, m in nnx.iter_modules(adder) if isinstance(m, Adder2D)]
    expected_units = {"vdsr": 18, "edsr_baseline": 33, "edsr": 65}[name]
    assert len(units) == len(adders) == expected_units
    # Each unit adds BN (2C) and one alpha; the kept convs are the same.
    width = 64 if name != "edsr" else 256
    assert param_count(adder) == param_count(cnn) + expected_units * (2 * width + 1)
    kept = [m for _, m in nnx.iter_modules(adder) if isinstance(m, nnx.Conv)]
    assert len(kept) == (2 if name == "vdsr" else 3)  # x2: head, upsampler, tail


@pytest.mark.parametrize("name,scale", [("vdsr", 2), ("vdsr", 3), ("edsr_baseline", 3),
                                        ("edsr_baseline", 4), ("edsr", 2)])
@pytest.mark.parametrize("variant", ["adder", "cnn"])
def test_output_shapes(name, scale, variant):
    model = abstract(name, variant, scale=scale)
    y = nnx.eval_shape(lambda m, x: m(x), model, jnp.zeros((2, 11, 7, 3)))
    assert y.shape == (2, 11 * scale, 7 * scale, 3)


def test_vdsr_starts_as_bicubic_and_rgb_colour_option():
    lr = jax.random.uniform(jax.random.key(0), (1, 6, 5, 3), minval=0, maxval=255)
    for colour in ("y", "rgb"):
        model = VDSR(scale=2, colour=colour, variant="adder", impl="reference", rngs=nnx.Rngs(0))
        model.eval()
        np.testing.assert_allclose(forward(model, lr), bicubic_upsample(lr, 2), atol=2e-3)
    assert VDSR(colour="rgb", rngs=nnx.Rngs(0)).input.kernel[...].shape == (3, 3, 3, 64)


def test_per_channel_alpha_and_spec():
    model = abstract("edsr_baseline", "adder", scale=2, per_channel_alpha=True)
    assert model.body[0].unit1.power.alpha.get_value().shape == (64,)
    spec = model_spec("vdsr", "adder", scale=3, colour="y", per_channel_alpha=False)
    assert spec == {"model": "vdsr", "variant": "adder", "scale": 3, "colour": "y",
                    "per_channel_alpha": False}
    assert get_model_info("edsr").task == "super_resolution"


def test_receptive_radius_bounds_the_dependence():
    """Perturbing one LR pixel changes no output pixel farther than receptive_radius LR pixels
    (small random CNNs of each family; the radius counts layers, not widths)."""
    vdsr = VDSR(scale=2, depth=6, features=8, variant="cnn", rngs=nnx.Rngs(0))
    vdsr.output = nnx.Conv(8, 1, (3, 3), padding=1, use_bias=False, rngs=nnx.Rngs(3))  # not 0
    edsr = EDSR(scale=2, num_blocks=2, features=8, variant="cnn", rngs=nnx.Rngs(0))
    lr = jax.random.uniform(jax.random.key(1), (1, 41, 41, 3), maxval=255)
    for model in (vdsr, edsr):
        delta = forward(model, lr.at[0, 20, 20].add(50.0)) - forward(model, lr)
        changed = np.argwhere(np.abs(np.asarray(delta[0])).max(-1) > 1e-4)
        reach = np.abs(changed // 2 - 20).max()
        assert 0 < reach <= model.receptive_radius, (type(model).__name__, reach)
        assert reach >= model.receptive_radius - 3  # and it is not a loose bound


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="scale must be an integer >= 2"):
        VDSR(scale=1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="colour must be one of"):
        VDSR(colour="lab", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="scale of 3 or a power of 2"):
        EDSR(scale=5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="no classes"):
        EDSR(num_classes=10, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="RGB LR images"):
        VDSR(rngs=nnx.Rngs(0))(jnp.zeros((1, 4, 4, 1)))


# ------------------------------------------------------------------------- operation counts
def test_operation_counts_adder_vs_cnn():
    counts = compare_variants("vdsr")  # LR 360x640 -> HR 720x1280
    adder, cnn = counts["adder"], counts["cnn"]
    hr_pixels = 720 * 1280
    body = 18 * hr_pixels * 64 * 64 * 9
    assert cnn.groups()["body"].mults == body and adder.groups()["body"].adds >= 2 * body
    powers = [layer for layer in adder.layers if layer.kind == "power"]
    assert len(powers) == 18 and powers[0].macs == hr_pixels * 64
    ratio = cnn.total().energy_pj() / adder.total().energy_pj()
    assert 2.0 < ratio < 2.56  # 4.6 / 1.8 pJ per replaced MAC, less the kept convs and powers
