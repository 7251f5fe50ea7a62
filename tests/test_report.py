"""report.html: its pieces (smoothing, slerp, frames), its content for real runs, the CLI, and
how it renders in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import webbrowser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge.cli import main
from ganforge.report.anim import compact, sample_frames, spread
from ganforge.report.html import ANIMATION, MAX_FRAMES, write_report
from ganforge.report.latent import interpolation, slerp
from ganforge.report.runlog import smooth, wall_time

from browser import IMAGES_JS, Browser, find_chromium
from runhelpers import add_evals, gaussian_run, image_run

DATA_URI = re.compile(r'<img [^>]*src="data:image/png;base64,([^"]+)"')


@pytest.fixture(scope="module")
def g2d(tmp_path_factory) -> Path:
    """A finished gaussian-2d run, whose report the loop wrote."""
    return gaussian_run(tmp_path_factory.mktemp("runs") / "g2d")


@pytest.fixture(scope="module")
def images_run(tmp_path_factory) -> Path:
    """A finished image run (vanilla MLP on random 28x28 images)."""
    return image_run(tmp_path_factory.mktemp("runs") / "img")


def _embedded(page: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(m))) for m in DATA_URI.findall(page)]


# ---------------------------------------------------------------- pieces


def test_smooth_corrects_its_start_and_keeps_constants():
    assert smooth([3.0, 3.0, 3.0], 0.9) == pytest.approx([3.0, 3.0, 3.0])
    assert smooth([1.0, 5.0], 0.0) == [1.0, 5.0]
    assert smooth([4.0, 4.0], 0.9)[0] == pytest.approx(4.0)  # a plain EMA would start at 0.4
    out = smooth([0.0, 10.0, 10.0], 0.5)
    assert out[1] == pytest.approx(10 * 0.5 / 0.75)  # debiased: weight mass 0.75 after 2 points
    assert out[1] < out[2] < 10.0


def test_wall_time_adds_resumed_segments():
    recs = [{"time": t} for t in (1.0, 2.0, 3.0, 0.5, 1.5)]  # resumed after 3 s
    assert wall_time(recs) == pytest.approx(4.5)
    assert wall_time([]) == 0.0


def test_slerp_ends_and_norms():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen)
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)  # equal norms
    path = slerp(a, b, torch.linspace(0, 1, 7))
    assert path.shape == (4, 7, 8)
    torch.testing.assert_close(path[:, 0], a)
    torch.testing.assert_close(path[:, -1], b)
    # on the great circle: the norm stays that of the ends (a straight line would shrink)
    torch.testing.assert_close(path.norm(dim=2), a.norm(dim=1, keepdim=True).expand(4, 7))
    same = slerp(a, 2 * a, torch.tensor([0.5]))  # parallel: falls back to a straight line
    torch.testing.assert_close(same[:, 0], 1.5 * a)


def test_sample_frames_in_training_order(tmp_path):
    (tmp_path / "samples").mkdir()
    for name in ("epoch_0010.png", "step_000035.png", "epoch_0002.png", "epoch_0001.png", "x.png"):
        Image.new("L", (4, 4)).save(tmp_path / "samples" / name)
    labels = [f.label for f in sample_frames(tmp_path)]
    assert labels == ["epoch 1", "epoch 2", "epoch 10", "step 35"]


def test_spread_keeps_ends():
    assert spread(list(range(100)), 5) == [0, 25, 50, 74, 99]
    assert spread([1, 2], 5) == [1, 2]


def test_compact_is_lossless():
    gray = Image.fromarray(torch.randint(0, 256, (9, 9), dtype=torch.uint8).numpy()).convert("RGB")
    assert compact(gray).mode == "L"
    assert (np.asarray(compact(gray).convert("RGB")) == np.asarray(gray)).all()
    few = Image.new("RGB", (6, 6), (10, 20, 30))
    few.putpixel((1, 1), (200, 0, 0))
    assert compact(few).mode == "P"
    assert (np.asarray(compact(few).convert("RGB")) == np.asarray(few)).all()


# ---------------------------------------------------------------- the page of real runs


def test_training_writes_a_self_contained_report(g2d):
    page = (g2d / "report.html").read_text()
    n_samples = len(list((g2d / "samples").glob("*.png")))
    assert n_samples == 3  # one scatter per epoch
    for section in ("Training curves", "Samples through training", "Final samples", "Model"):
        assert section in page
    assert "finished" in page and "gaussian-2d" in page
    # one scrubber frame per sample file, the slider spanning them, the last one showing
    assert page.count('<img data-label="epoch') == n_samples
    assert f'max="{n_samples - 1}" value="{n_samples - 1}"' in page
    images = _embedded(page)
    assert len(images) == page.count("<img ") >= 3 + n_samples + 2  # curves, frames, final, G
    assert all(im.width > 0 and im.height > 0 for im in images)
    # nothing is fetched: every image is a data URI, the only link is the animation beside it
    refs = re.findall(r'(?:src|href)="(?!data:)([^"]*)"', page)
    assert refs == [ANIMATION]
    with Image.open(g2d / ANIMATION) as gif:
        assert gif.n_frames == n_samples


def test_report_shows_metrics_and_the_best_checkpoint(g2d, tmp_path):
    run = Path(shutil.copytree(g2d, tmp_path / "with-metrics"))
    add_evals(run, [30.0, 12.5, 20.0], best=1)
    (run / "metrics.json").write_text(json.dumps({"fd": 12.5, "protocol": {"samples": 1000}}))
    page = write_report(run).read_text()
    assert "Quality metrics" in page and "metrics.json" in page
    assert "best checkpoint (step 16)" in page  # the flagged record, not the last one
    assert "extra.kl" in page  # nested numbers are found and named
    assert "eval_s" not in page  # the evaluation's own timing is no quality metric
    assert "protocol.samples" in page


def test_report_of_an_image_run_has_an_interpolation_grid(images_run):
    png = interpolation(images_run, rows=3, steps=5)
    with Image.open(io.BytesIO(png)) as im:
        assert im.size == (5 * 30 + 2, 3 * 30 + 2)  # 28x28 tiles with 2-pixel padding
        assert im.mode == "L"  # gray images stay one channel
    page = (images_run / "report.html").read_text()
    frames = sample_frames(images_run)
    assert [f.label for f in frames] == ["step 2", "step 4", "step 6"]
    assert page.count("<img data-label=") == len(frames) <= MAX_FRAMES
    assert "Latent interpolation" in page and "no interpolation" not in page


def test_report_without_checkpoint_still_renders(images_run, tmp_path):
    run = Path(shutil.copytree(images_run, tmp_path / "no-ckpt"))
    shutil.rmtree(run / "checkpoints")
    page = write_report(run).read_text()
    assert "no interpolation" in page and "no checkpoint" in page


def test_cli_report_and_open(images_run, monkeypatch, capsys):
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    (images_run / "report.html").unlink()
    assert main(["report", str(images_run), "--open"]) == 0
    assert (images_run / "report.html").exists()
    assert opened == [(images_run / "report.html").resolve().as_uri()]
    assert "MB)" in capsys.readouterr().out

    def no_browser(url):
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "open", no_browser)
    assert main(["report", str(images_run), "--open"]) == 0
    assert "open the file yourself" in capsys.readouterr().out


def test_no_report_when_switched_off(tmp_path):
    run = gaussian_run(tmp_path / "quiet", "train.epochs=1", "train.report=false")
    assert (run / "final.png").exists() and not (run / "report.html").exists()


def test_cli_report_of_a_non_run_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ganforge: error:") and err.count("\n") == 1
    assert main(["report", str(tmp_path / "missing")]) == 2


# ---------------------------------------------------------------- in a real browser


needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="chromium is not installed (apt-get install chromium; .ci/run installs it)",
)


@needs_chromium
def test_the_browser_check_sees_broken_pages(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<html><body><img src="data:image/png;base64,AAAA" alt="broken">'
        "<script>console.error('boom'); undefinedFunction();</script></body></html>"
    )
    with Browser(find_chromium()) as b:
        b.open(bad.resolve().as_uri())
        [img] = json.loads(b.evaluate(IMAGES_JS))
        errors = b.errors()
    assert img["w"] == 0
    assert any("boom" in e for e in errors) and any("undefinedFunction" in e for e in errors)


@needs_chromium
@pytest.mark.parametrize("which", ["g2d", "images_run"])
def test_report_renders_in_headless_chromium(which, request, tmp_path):
    run = request.getfixturevalue(which)
    page = (run / "report.html").read_text()
    with Browser(find_chromium()) as b:
        b.open((run / "report.html").resolve().as_uri())
        images = json.loads(b.evaluate(IMAGES_JS))
        assert len(images) == page.count("<img ")
        assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in images), images
        # the scrubber: moving it shows another frame and names it
        shown = "Array.from(document.querySelectorAll('#frames img')).map(i => !i.hidden)"
        last = b.evaluate(shown)
        assert last[-1] and sum(last) == 1
        b.evaluate(
            "var s = document.getElementById('scrub'); s.value = 0;"
            "s.dispatchEvent(new Event('input'))"
        )
        first = b.evaluate(shown)
        assert first[0] and sum(first) == 1
        assert b.evaluate("document.getElementById('frame-label').textContent").endswith(
            f"(1 of {len(first)})"
        )
        shot = b.screenshot(tmp_path / "shot.png")
        assert b.errors() == []
    with Image.open(shot) as im:
        assert im.width == 1280 and im.height > 1500  # the whole page, not only the viewport
        colors = im.convert("RGB").getcolors(1 << 20)
        assert colors is not None and len(colors) > 100  # not blank: text, plots, samples
        background = sum(n for n, c in colors if c in ((255, 255, 255), (250, 250, 250)))
        assert background < 0.97 * im.width * im.height
