"""The resnet family: the stages it picks per image side, and every variant (residual or
plain, plain or class-conditional) at the sizes the image recipes use."""

from __future__ import annotations

import pytest
import torch

from ganforge import nets
from ganforge.config import ModelConfig
from ganforge.errors import ConfigError
from ganforge.nets.resnet import stages


@pytest.mark.parametrize(
    ("side", "expected"),
    [
        (28, (7, 2)),
        (32, (4, 3)),
        (48, (6, 3)),
        (64, (4, 4)),
        (96, (6, 4)),
        (256, (4, 6)),
        (30, (15, 1)),
    ],
)
def test_stages_halve_to_a_base_of_4_to_7(side, expected):
    assert stages(side) == expected


def test_an_image_too_small_to_halve_is_one_line():
    cfg = ModelConfig(g="resnet", d="resnet", z_dim=8)
    with pytest.raises(ConfigError, match="resnet needs an image side of 8 or more"):
        nets.build_generator(cfg, (1, 7, 7))


@pytest.mark.parametrize("res", [True, False], ids=["residual", "plain"])
@pytest.mark.parametrize("classes", [None, 3], ids=["unconditional", "conditional"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 64, 64)], ids=["28", "64"])
def test_resnet_shapes_gradients_and_labels(res, classes, shape):
    """G maps (N, z) to (N, *shape) in [-1, 1], D to (N, 1); every weight gets a gradient; with
    classes and no label embedding, the labels still change G's output: through the class
    BatchNorms inside its blocks."""
    args = {"ch": 4, "res": res}
    g_args = {**args, "embed_dim": 0} if classes else args
    cfg = ModelConfig(
        g="resnet", d="resnet", z_dim=8, g_args=g_args, d_args=args, num_classes=classes
    )
    g, d = nets.build_generator(cfg, shape), nets.build_discriminator(cfg, shape)
    y = None if classes is None else torch.tensor([0, 1, 2, 1])
    x = nets.generate(g, torch.randn(4, 8), y)
    assert x.shape == (4, *shape) and x.abs().max() <= 1
    out = nets.judge(d, x, y)
    assert out.shape == (4, 1)
    out.sum().backward()
    for net in (g, d):
        assert all(p.grad is not None for p in net.parameters())
    if classes is not None:
        with torch.no_grad():  # class 1's BatchNorm shift moved: class 1's images change
            for m in g.modules():
                if hasattr(m, "beta"):
                    m.beta.weight[1] += 0.5
        g.eval()
        z = torch.randn(1, 8).expand(3, 8)
        with torch.no_grad():
            a = g(z, torch.tensor([0, 1, 2]))
        assert torch.allclose(a[0], a[2]) and not torch.allclose(a[0], a[1])


def test_widths_double_per_stage_up_to_the_cap():
    g = nets.GENERATORS.get("resnet")(z_dim=8, shape=(3, 64, 64), ch=8, cap=32, res=False)
    convs = [m.out_channels for m in g.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [32, 32, 16, 8, 3]  # 4 -> 8 -> 16 -> 32 -> 64 pixels, then to RGB


@pytest.mark.parametrize("smooth", [False, True], ids=["detail", "smooth+detail"])
@pytest.mark.parametrize("shuffle", [1, 2])
def test_sub_pixel_stages_keep_shapes_and_drop_the_full_size_maps(shuffle, smooth):
    """shuffle=k: G's last conv works at side 64 / 2**k and a pixel shuffle makes the image; D
    unshuffles first; both still map z -> (3, 64, 64) -> logit, with gradients to every
    weight, and no conv runs at 64x64."""
    args = {"ch": 4, "res": False, "shuffle": shuffle}
    cfg = ModelConfig(
        g="resnet", d="resnet", z_dim=8, g_args={**args, "smooth": smooth}, d_args=args
    )
    g, d = nets.build_generator(cfg, (3, 64, 64)), nets.build_discriminator(cfg, (3, 64, 64))
    sides = []
    for net in (g, d):
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.register_forward_hook(lambda m, i, o: sides.append(o.shape[-1]))
    x = g(torch.randn(4, 8))
    assert x.shape == (4, 3, 64, 64) and x.abs().max() <= 1
    d(x).sum().backward()
    assert max(sides) == 64 // 2**shuffle
    assert all(p.grad is not None for net in (g, d) for p in net.parameters())
    convs = [m.out_channels for m in g.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[-2:] == ([3 * 4**shuffle, 3] if smooth else [convs[-2], 3 * 4**shuffle])


def test_a_shuffle_past_the_stages_keeps_one_conv_stage_and_a_negative_one_is_one_line():
    """28 -> 7 has 2 stages: shuffle 2 is shuffle 1 there (one up stage, then 2x)."""
    cfg = ModelConfig(g="resnet", d="resnet", z_dim=8, g_args={"ch": 4, "shuffle": 2})
    g = nets.build_generator(cfg, (1, 28, 28))
    assert [type(m).__name__ for m in g.modules()].count("Up") == 1
    assert g.out.scale == 2 and g(torch.randn(2, 8)).shape == (2, 1, 28, 28)
    bad = ModelConfig(g="resnet", d="resnet", z_dim=8, d_args={"shuffle": -1})
    with pytest.raises(ConfigError, match=r"d_args.shuffle: must be at least 0"):
        nets.build_discriminator(bad, (1, 28, 28))


def test_minibatch_std_is_low_for_repeated_images_and_groups_by_index():
    """The extra map is each group's mean feature std: ~0 when a batch repeats one image,
    0.8 for unit normal features; image i is in group i % (N / g), so a batch of 6 with
    groups of 4 falls back to groups of 2 (3 groups)."""
    from ganforge.nets.resnet import MinibatchStd

    m = MinibatchStd(4)
    same = m(torch.randn(1, 3, 2, 2).expand(8, 3, 2, 2).contiguous())
    assert same.shape == (8, 4, 2, 2) and same[:, 3].abs().max() < 1e-3
    x = torch.randn(4096, 2, 4, 4)
    # the std of 4 unit normals (biased) is sqrt(chi2_3 / 4): mean 0.5 * E[chi_3] = 0.798
    assert abs(float(m(x)[:, 2].mean()) - 0.798) < 0.02
    six = m(torch.randn(6, 3, 2, 2))[:, 3, 0, 0]
    assert torch.equal(six[:3], six[3:]) and len(set(six.tolist())) == 3
    cfg = ModelConfig(g="resnet", d="resnet", z_dim=8, d_args={"ch": 4, "mbstd": 4})
    d = nets.build_discriminator(cfg, (1, 28, 28))
    assert d(torch.randn(5, 1, 28, 28)).shape == (5, 1)
