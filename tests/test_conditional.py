"""Class-conditional GANs: the conditional nets, ``sample --class``, balanced evaluation."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from ganforge import nets
from ganforge.cli import main, sample_labels
from ganforge.config import ModelConfig, load_config
from ganforge.data import TensorData, data_shape
from ganforge.engine import loop
from ganforge.errors import ConfigError, GanforgeError
from ganforge.metrics.evaluate import Evaluation
from ganforge.nets.cond import ClassBatchNorm

from runhelpers import cli_idx_run

K = 10
# (G, D, shape, G params, D params). Each is its unconditional family's count plus:
# G: z_dim + 10 inputs to the first layer (10 x its width), the 10 x 10 label embedding, and
#    per-class BN scale/shift (9 more copies of every BN's 2 x features);
# D: the 10 class vectors of the projection, one per feature of phi.
COND_NETS = [
    # mlp: BN features 256 + 512 + 1024 = 1,792; phi 256
    ("mlp-cond", "mlp-proj", (1, 28, 28), 1_510_032 + 10 * 128 + 100 + 18 * 1_792, 533_505 + 2_560),
    # dcgan-mnist: dense 12,544 wide, BN 12,544 + 128 + 64 = 12,736; phi 128 x 7 x 7 = 6,272
    (
        "dcgan-mnist-cond",
        "dcgan-mnist-proj",
        (1, 28, 28),
        2_318_209 + 10 * 12_544 + 100 + 18 * 12_736,
        212_865 + 62_720,
    ),
    # dcgan-svhn: dense 8,192 wide, BN 512 + 256 + 128 = 896; phi 256 x 4 x 4 = 4,096
    (
        "dcgan-svhn-cond",
        "dcgan-svhn-proj",
        (3, 32, 32),
        4_935_171 + 10 * 8_192 + 100 + 18 * 896,
        1_034_113 + 40_960,
    ),
    # dcgan-64 at 32x32 with base 64 (no bias): first tconv 10 x 256 x 4 x 4 more,
    # BN 256 + 128 + 64 = 448; D's BN 64 + 128 + 256 and convs, phi 256 x 4 x 4 = 4,096
    ("dcgan-64-cond", "dcgan-64-proj", (3, 32, 32), None, None),
]


def _cfg(g: str, d: str, **kw) -> ModelConfig:
    return ModelConfig(g=g, d=d, z_dim=100, num_classes=K, **kw)


def _plain(g: str, d: str) -> ModelConfig:
    return ModelConfig(g=g.removesuffix("-cond"), d=d.removesuffix("-proj"), z_dim=100)


@pytest.mark.parametrize("g, d, shape, g_params, d_params", COND_NETS)
def test_conditional_nets_shapes_and_parameter_counts(g, d, shape, g_params, d_params):
    cfg = _cfg(g, d)
    gen, disc = nets.build_generator(cfg, shape), nets.build_discriminator(cfg, shape)
    if g_params is None:  # dcgan-64: the same additions, counted from the plain nets
        plain = _plain(g, d)
        g0 = nets.count_params(nets.build_generator(plain, shape))
        d0 = nets.count_params(nets.build_discriminator(plain, shape))
        g_params = g0 + 10 * 256 * 4 * 4 + 100 + 18 * 448
        d_params = d0 + 10 * 4_096
    assert (nets.count_params(gen), nets.count_params(disc)) == (g_params, d_params)
    z, y = torch.randn(4, 100), torch.tensor([0, 3, 9, 3])
    x = gen(z, y)
    assert x.shape == (4, *shape) and x.abs().max() <= 1
    assert disc(x, y).shape == (4, 1)


def test_slim_conditional_dcgan_mnist_takes_the_widths():
    """widths reach the conditional nets: dcgan-fmnist-plus's slim nets (177,777 / 14,817
    parameters) plus the same additions; dense 32 x 7 x 7 = 1,568 wide, BN 1,568 + 16 + 8."""
    cfg = _cfg(
        "dcgan-mnist-cond",
        "dcgan-mnist-proj",
        g_args={"widths": [32, 16, 8]},
        d_args={"widths": [16, 32]},
    )
    gen, disc = nets.build_generator(cfg, (1, 28, 28)), nets.build_discriminator(cfg, (1, 28, 28))
    assert nets.count_params(gen) == 177_777 + 10 * 1_568 + 100 + 18 * 1_592
    assert nets.count_params(disc) == 14_817 + 10 * 1_568
    assert gen(torch.randn(2, 100), torch.tensor([1, 7])).shape == (2, 1, 28, 28)


def test_cgan_fmnist_recipe_builds_its_nets():
    cfg = load_config("cgan-fmnist")
    shape = data_shape(cfg.data)
    m = loop.build_models(cfg, shape, torch.device("cpu"))
    assert shape == (1, 28, 28) and cfg.model.num_classes == 10
    assert (nets.count_params(m.g), nets.count_params(m.d)) == (1_543_668, 536_065)
    bns = [mod for mod in m.g.modules() if isinstance(mod, ClassBatchNorm)]
    assert [b.bn.eps for b in bns] == [0.8, 0.8, 0.8]  # the seed's quirk, as vanilla-fmnist
    m.g.eval()
    y = torch.arange(4)
    assert nets.generate(m.g, torch.randn(4, 100), y).shape == (4, 1, 28, 28)


@pytest.mark.parametrize("g, d, shape", [(g, d, s) for g, d, s, *_ in COND_NETS])
def test_projection_logit_is_plain_logit_plus_class_vector_product(g, d, shape):
    torch.manual_seed(0)
    disc = nets.build_discriminator(_cfg(g, d), shape).eval()  # eval: no dropout
    x = torch.randn(3, *shape)
    a, b = torch.tensor([1, 1, 1]), torch.tensor([4, 7, 1])
    with torch.no_grad():
        la, lb = disc(x, a), disc(x, b)
        phi = disc.trunk(x).flatten(1)
        w = disc.proj.weight  # (K, F)
        expected = ((w[a] - w[b]) * phi).sum(1, keepdim=True)
    assert not torch.allclose(la[:2], lb[:2])  # another class, another logit
    assert torch.equal(la[2], lb[2])  # the same class, the same logit
    torch.testing.assert_close(la - lb, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("g_args", [{}, {"embed_dim": 0}, {"cbn": False}])
def test_generator_output_depends_on_the_label(g_args):
    torch.manual_seed(0)
    gen = nets.build_generator(_cfg("mlp-cond", "mlp-proj", g_args=g_args), (1, 28, 28))
    for m in gen.modules():  # move the class scales/shifts off their all-equal init
        if isinstance(m, ClassBatchNorm):
            torch.nn.init.normal_(m.gamma.weight, 1.0, 0.5)
            torch.nn.init.normal_(m.beta.weight, 0.0, 0.5)
    gen.eval()
    z = torch.randn(1, 100).repeat(3, 1)  # one z, three labels
    with torch.no_grad():
        x = gen(z, torch.tensor([2, 5, 2]))
    assert torch.equal(x[0], x[2])
    assert (x[0] - x[1]).abs().max() > 1e-3


def test_class_batch_norm_starts_as_the_batch_norm_it_replaces():
    bn = torch.nn.BatchNorm2d(6, eps=0.1, momentum=0.3)
    cbn = ClassBatchNorm(bn, 4)
    x = torch.randn(8, 6, 5, 5)
    torch.testing.assert_close(cbn(x, torch.arange(8) % 4), bn(x))
    torch.testing.assert_close(cbn.bn.running_mean, bn.running_mean)
    assert (cbn.bn.eps, cbn.bn.momentum, cbn.gamma.weight.shape) == (0.1, 0.3, (4, 6))


def test_gradients_reach_the_class_parameters_of_the_classes_in_the_batch():
    torch.manual_seed(0)
    cfg = _cfg("dcgan-mnist-cond", "dcgan-mnist-proj")
    gen, disc = nets.build_generator(cfg, (1, 28, 28)), nets.build_discriminator(cfg, (1, 28, 28))
    y = torch.tensor([0, 2, 2, 5])  # classes 1, 3, 4, 6-9 are absent
    disc(gen(torch.randn(4, 100), y), y).mean().backward()
    absent = torch.tensor([1, 3, 4, 6, 7, 8, 9])
    grads = {
        "G embedding": gen.embed.weight.grad,
        "G class BN scale": gen.body.bn1.gamma.weight.grad,
        "G class BN shift": gen.body.bn2.beta.weight.grad,
        "D class vectors": disc.proj.weight.grad,
    }
    for name, grad in grads.items():
        assert grad is not None, name
        assert grad[[0, 2, 5]].abs().sum(1).min() > 0, f"{name}: a present class got none"
        assert torch.all(grad[absent] == 0), f"{name}: an absent class got a gradient"


@pytest.mark.parametrize(
    "y, message",
    [
        (torch.tensor([0, 10]), "class label 10 is out of range"),
        (torch.tensor([-1, 2]), "class label -1 is out of range"),
        (torch.tensor([0.0, 1.0]), "int64 tensor of shape (2,)"),
        (torch.tensor([0, 1, 2]), "int64 tensor of shape (2,)"),
    ],
)
def test_bad_labels_are_clear_errors(y, message):
    cfg = _cfg("mlp-cond", "mlp-proj")
    gen, disc = nets.build_generator(cfg, (1, 28, 28)), nets.build_discriminator(cfg, (1, 28, 28))
    with pytest.raises(GanforgeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gen(torch.randn(2, 100), y)
    with pytest.raises(GanforgeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        disc(torch.randn(2, 1, 28, 28), y)


def test_a_generator_that_would_ignore_labels_is_refused():
    cfg = _cfg("mlp-cond", "mlp-proj", g_args={"embed_dim": 0, "cbn": False})
    with pytest.raises(ConfigError, match="G would ignore the labels"):
        nets.build_generator(cfg, (1, 28, 28))


# ---------------------------------------------------------------- sample --class


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    """A 4-step cgan-fmnist run on tiny Fashion-MNIST-format files (64 train, 64 test)."""
    return cli_idx_run(tmp_path_factory.mktemp("cgan"), "-r", "cgan-fmnist")


def test_sample_class_writes_a_grid_of_that_class(cond_run, tmp_path, capsys):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    assert main(["sample", str(cond_run), "-n", "9", "--class", "3", "-o", str(a)]) == 0
    assert "wrote 9 samples of class 3" in capsys.readouterr().out
    assert main(["sample", str(cond_run), "-n", "9", "--class", "3", "-o", str(b)]) == 0
    assert main(["sample", str(cond_run), "-n", "9", "--class", "4", "-o", str(c)]) == 0
    assert Image.open(a).size == (3 * 30 + 2, 3 * 30 + 2)  # 3x3 grid of 28px + 2px padding
    pa, pb, pc = (Image.open(p).tobytes() for p in (a, b, c))
    assert pa == pb and pa != pc  # same noise, another class: other images


def test_sample_without_class_shows_every_class(cond_run, tmp_path):
    out = tmp_path / "s.png"
    assert main(["sample", str(cond_run), "-n", "20", "-o", str(out)]) == 0
    assert Image.open(out).size == (2 * 30 + 2, 10 * 30 + 2)  # 10 rows (classes) of 2


@pytest.mark.parametrize(
    "n, k, cols, counts",
    [
        (20, None, 2, [2] * 10),  # a multiple of the classes: row r is class r
        (64, None, 10, [7] * 4 + [6] * 6),  # else column c is class c
        (5, None, 5, [1] * 5 + [0] * 5),
        (9, 7, 3, [0] * 7 + [9] + [0] * 2),
    ],
)
def test_sample_labels_are_balanced_and_laid_out_by_class(n, k, cols, counts):
    y, c = sample_labels(n, 10, k)
    assert c == cols and torch.bincount(y, minlength=10).tolist() == counts
    if n % 10 == 0 and k is None:
        assert torch.equal(y.view(-1, cols), torch.arange(10).view(-1, 1).expand(10, cols))


@pytest.mark.parametrize(
    "conditional, k, message",
    [
        (False, 3, "--class 3: " + "{run} is not class-conditional (no model.num_classes)"),
        (True, 10, "--class 10: out of range; {run} has 10 classes, 0-9"),
        (True, -1, "--class -1: out of range"),
    ],
)
def test_sample_class_mistakes_are_one_line_errors(
    conditional, k, message, cond_run, tmp_path, capsys
):
    run = cond_run
    if not conditional:  # the check comes before any checkpoint is read
        run = tmp_path / "plain"
        run.mkdir()
        (run / "config.yaml").write_text("recipe: vanilla-fmnist\n")
    assert main(["sample", str(run), "--class", str(k), "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert message.format(run=run) in err and err.count("\n") == 0
    assert not (tmp_path / "x.png").exists()


def test_recipes_show_summarizes_the_conditional_nets(capsys):
    assert main(["recipes", "--show", "cgan-fmnist"]) == 0
    out = capsys.readouterr().out
    assert "num_classes: 10" in out and "Generator 'mlp-cond'" in out
    assert "Total params: 1,543,668" in out and "Total params: 536,065" in out


# ---------------------------------------------------------------- evaluation


class _Recorder(torch.nn.Module):
    """A conditional 'G' that draws one gray level per class and remembers its labels."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.seen.append(y.clone())
        return (y.float() / 10 * self.scale).view(-1, 1, 1, 1).expand(-1, 1, 28, 28)


def test_evaluation_samples_every_class_equally_often():
    cfg = load_config("cgan-fmnist", ["data.download=false"])
    x = torch.randint(0, 256, (30, 1, 28, 28), dtype=torch.uint8)
    ev = Evaluation(cfg, "coverage", n=25, real=TensorData(x, torch.arange(30) % 10, "test"))
    g = _Recorder()
    images = ev.sample(g, batch=10)  # three chunks of labels
    y = torch.cat(g.seen)
    assert torch.bincount(y, minlength=10).tolist() == [3] * 5 + [2] * 5
    assert torch.equal(y, torch.arange(25) % 10)
    # the images are G's, in label order: gray level y / 10 in [-1, 1] -> uint8
    assert images.shape == (25, 1, 28, 28) and images[13, 0, 0, 0] == round((0.3 + 1) * 127.5)


def test_evaluate_cli_on_a_conditional_run_reports_class_accuracy(cond_run):
    assert main(["evaluate", str(cond_run), "--n", "20", "--metrics", "fd,coverage"]) == 0
    m = json.loads((cond_run / "metrics.json").read_text())["metrics"]
    assert 0 <= m["class_acc"] <= 1 and len(m["class_hist"]) == 10


def test_class_accuracy_is_the_share_of_samples_classified_as_asked():
    cfg = load_config("cgan-fmnist", ["data.download=false"])
    x = torch.randint(0, 256, (30, 1, 28, 28), dtype=torch.uint8)
    ev = Evaluation(cfg, "coverage", n=20, real=TensorData(x, torch.arange(30) % 10, "test"))

    class Stub:  # the evaluator "sees" the asked-for class in 15 of the 20 samples
        def features(self, images):
            seen = torch.arange(20) % 10
            seen[:5] = (seen[:5] + 1) % 10
            return torch.zeros(20, 4), torch.nn.functional.one_hot(seen, 10).double()

    ev.evaluator = Stub()
    values = ev.score_images(torch.zeros(20, 1, 28, 28, dtype=torch.uint8))
    assert values["class_acc"] == 0.75


def test_latent_interpolation_holds_one_class_per_row(cond_run, monkeypatch):
    from ganforge.report.latent import interpolation

    calls = []
    real_generate = nets.generate

    def spy(g, z, y=None):
        calls.append(y)
        return real_generate(g, z, y)

    monkeypatch.setattr(nets, "generate", spy)
    png = interpolation(cond_run, rows=12, steps=3)
    assert png.startswith(b"\x89PNG")
    rows = calls[0].view(12, 3)  # one path of 3 points per row
    assert torch.equal(rows, (torch.arange(12) % 10).view(-1, 1).expand(12, 3))
