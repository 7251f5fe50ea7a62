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
