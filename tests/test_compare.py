"""``ganforge compare`` (one self-contained page of several runs) and the report refreshed
during training."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from ganforge.cli import main
from ganforge.report import html as report_html
from ganforge.report.compare import config_diff, flat

from browser import IMAGES_JS, Browser, find_chromium
from runhelpers import add_evals, gaussian_run, image_run


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    a = gaussian_run(root / "slow-lr", "train.report=false", "optim.g.lr=0.0005")
    b = gaussian_run(root / "fast-lr", "train.report=false")
    add_evals(a, [30.0, 12.5], best=1)
    add_evals(b, [25.0, 20.0], best=1)
    return a, b


def test_config_diff_shows_only_what_differs():
    a = {"recipe": "x", "optim": {"g": {"lr": 0.1, "betas": [0.5, 0.9]}}, "train": {"seed": 1}}
    b = {"recipe": "x", "optim": {"g": {"lr": 0.2, "betas": [0.5, 0.9]}}, "train": {}}
    assert flat(a)["optim.g.betas"] == "[0.5, 0.9]"
    assert config_diff([a, b]) == [("optim.g.lr", ["0.1", "0.2"]), ("train.seed", ["1", "-"])]


def test_compare_page(pair, tmp_path, capsys):
    out = tmp_path / "c.html"
    assert main(["compare", *map(str, pair), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    page = out.read_text()
    assert "optim.g.lr" in page and "0.0005" in page
    assert "train.epochs" not in page  # equal in both: not shown
    assert page.count("final samples of") == 2
    assert "fd (last, training) (lower is better)" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert not list(tmp_path.glob(".*.tmp"))


def test_compare_errors(pair, tmp_path, capsys):
    assert main(["compare", str(pair[0])]) == 2
    assert main(["compare", str(pair[0]), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "at least two" in err and "not a ganforge run directory" in err
    assert "Traceback" not in err


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_compare_renders_in_headless_chromium(pair, tmp_path):
    out = tmp_path / "c.html"
    assert main(["compare", *map(str, pair), "-o", str(out)]) == 0
    page = out.read_text()
    with Browser(find_chromium()) as b:
        b.open(out.resolve().as_uri())
        images = json.loads(b.evaluate(IMAGES_JS))
        assert len(images) == page.count("<img ") >= 6
        assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in images), images
        shot = b.screenshot(tmp_path / "shot.png")
        assert b.errors() == []
    with Image.open(shot) as im:
        colors = im.convert("RGB").getcolors(1 << 20)
        assert colors is not None and len(colors) > 100
        background = sum(n for n, c in colors if c in ((255, 255, 255), (250, 250, 250)))
        assert background < 0.97 * im.width * im.height


def test_refresh_report_is_live_rate_limited_and_atomic(tmp_path, monkeypatch):
    run = image_run(tmp_path / "r", "train.report=false")
    clock = [100.0]
    monkeypatch.setattr(report_html.time, "perf_counter", lambda: clock[0])
    assert report_html.refresh_report(run) is None  # the first call starts the clock
    assert not (run / "report.html").exists()
    clock[0] += 31
    path = report_html.refresh_report(run)
    page = path.read_text()
    assert "http-equiv='refresh'" in page and "drawn when the run ends" in page
    assert not (run / "progress.gif").exists()  # the animation waits for the end
    clock[0] += 5
    assert report_html.refresh_report(run) is None  # too soon
    assert not list(run.glob(".report.html*"))
    final = report_html.write_report(run).read_text()
    assert "http-equiv='refresh'" not in final


def test_the_loop_refreshes_the_report_at_sample_steps(tmp_path, monkeypatch):
    from ganforge.report import html

    calls = []  # the loop's LiveReport hook calls report.html.refresh_report at sample steps
    monkeypatch.setattr(html, "refresh_report", lambda d: calls.append(d))
    image_run(tmp_path / "r")  # 6 steps, a grid every 2
    assert calls == [tmp_path / "r"] * 3
