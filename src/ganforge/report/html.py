"""``RUN_DIR/report.html``: one self-contained page about a run (images as data URIs, no network).

Sections: facts (status, length, wall time, throughput), training curves, evaluation metrics,
fixed-noise samples through training (a scrubber, plus ``progress.gif`` beside the page), the
final grid, a latent interpolation from the final generator, model summary, config, environment.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from ..errors import GanforgeError
from ..runfiles import atomic_write_text, check_output_file
from . import plots
from .anim import png_bytes, sample_frames, spread, write_animation
from .runlog import (
    best_eval,
    hms,
    median_img_s,
    metric_numbers,
    numbers,
    read_log,
    read_status,
    run_state,
    wall_time,
)

REPORT = "report.html"
ANIMATION = "progress.gif"
MAX_FRAMES = 48  # sample grids embedded in the scrubber (evenly spread over the run)
SMALL = 480  # pixel grids narrower than 2/3 of this are enlarged to about this width

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1280px;padding:1em 2em;color:#222;background:#fafafa}
h1{margin-bottom:.1em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
.sub{color:#666;margin-top:0}.row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
table{border-collapse:collapse;font-size:.92em}
td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left}th{background:#eee}
td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#fff;border:1px solid #ddd;padding:.8em;overflow:auto;font-size:.85em;
max-height:32em}
img{max-width:100%;height:auto;background:#fff}img.px{image-rendering:pixelated}
.note{color:#777;font-style:italic}.scrub{display:flex;gap:.8em;align-items:center;margin:.5em 0}
.scrub input{width:min(600px,60vw)}.status-finished{color:#070}.status-failed{color:#b00}
.status-interrupted{color:#b60}.status-running{color:#06b}
"""

SCRIPT = """
(function () {
  var slider = document.getElementById('scrub');
  if (!slider) return;
  var frames = document.querySelectorAll('#frames img');
  var label = document.getElementById('frame-label');
  var button = document.getElementById('play');
  var timer = null;
  function show(i) {
    frames.forEach(function (f, j) { f.hidden = j !== i; });
    label.textContent = frames[i].dataset.label + ' (' + (i + 1) + ' of ' + frames.length + ')';
  }
  slider.addEventListener('input', function () { show(+slider.value); });
  button.addEventListener('click', function () {
    if (timer) { clearInterval(timer); timer = null; button.textContent = 'Play'; return; }
    button.textContent = 'Pause';
    timer = setInterval(function () {
      var i = (+slider.value + 1) % frames.length;
      slider.value = i;
      show(i);
    }, 300);
  });
  show(+slider.value);
})();
"""

# No network at all: images are data URIs, style and script are inline.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

e = html.escape


def _img(png: bytes, alt: str, pixels: bool = False) -> str:
    """An <img> with the PNG as a data URI. ``pixels``: a grid of small images, shown crisp
    (no smoothing) and enlarged by a whole factor when it is small (28x28 grids are tiny)."""
    with Image.open(io.BytesIO(png)) as im:
        w, h = im.size
    scale = max(1, round(SMALL / w)) if pixels and w < SMALL * 2 // 3 else 1
    cls = ' class="px"' if pixels else ""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f'<img src="{uri}" alt="{e(alt)}" width="{w * scale}" height="{h * scale}"{cls}>'


def _table(rows: Sequence[Sequence[Any]], head: Sequence[str] | None = None) -> str:
    def cell(v: Any, tag: str = "td") -> str:
        num = isinstance(v, (int, float)) and not isinstance(v, bool)
        return f"<{tag}{' class=num' if num else ''}>{e(_fmt(v))}</{tag}>"

    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
    out += ["<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows]
    return "\n".join(out + ["</table>"])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _facts(run_dir: Path, cfg: dict[str, Any], log: Any, env: dict[str, Any]) -> list[tuple]:
    st = read_status(run_dir)
    state = run_state(run_dir)
    total = st.get("total_steps") or (cfg.get("train") or {}).get("iterations")
    last = log.train[-1] if log.train else {}
    wall = wall_time(log.train)
    rows: list[tuple] = [
        ("status", state + (f": {st['error']}" if st.get("error") else "")),
        ("steps", f"{log.last_step:,} of {total:,}" if total else f"{log.last_step:,}"),
    ]
    if last:
        rows += [("epoch", last.get("epoch", "?")), ("images seen", last.get("images", "?"))]
    rows.append(("wall time (training)", hms(wall)))
    med = median_img_s(log.train)
    if med is not None:
        rows.append(("throughput, median of log windows", f"{med:,.0f} images/s"))
    if wall > 0 and last.get("images"):
        rows.append(("throughput, overall", f"{last['images'] / wall:,.0f} images/s"))
    device = env.get("gpu") or env.get("device")
    if device:
        rows.append(("device", device))
    for key, name in (("loss_d", "final D loss"), ("loss_g", "final G loss")):
        if key in last:
            rows.append((name, last[key]))
    if "d_real" in last:
        rows.append(("final D(x) / D(G(z))", f"{last['d_real']:.3f} / {last['d_fake']:.3f}"))
    return [(k, _fmt(v)) for k, v in rows]  # all text: one alignment in the table


def _metrics_section(run_dir: Path, evals: list[dict[str, Any]]) -> str:
    parts = []
    best = best_eval(evals)
    if evals:
        png = plots.metrics_plot(evals, best["step"] if best else None)
        if png:
            parts.append(_img(png, "evaluation metrics over training"))
        last = metric_numbers(evals[-1]["eval"])
        at_best = metric_numbers(best["eval"]) if best else {}
        head = ["metric", f"last (step {evals[-1]['step']:,})"]
        if best:
            head.append(f"best checkpoint (step {best['step']:,})")
        rows = [[k, v] + ([at_best.get(k, "")] if best else []) for k, v in last.items()]
        parts.append(_table(rows, head))
    text = _read(run_dir / "metrics.json")
    if text is not None:
        parts.append("<h3>metrics.json</h3>")
        try:
            data = json.loads(text)
            flat = numbers(data) if isinstance(data, dict) else {}
            if flat:
                parts.append(_table(sorted(flat.items()), ["key", "value"]))
        except ValueError:
            pass
        parts.append(f"<details><summary>raw</summary><pre>{e(text)}</pre></details>")
    return "\n".join(parts)


def _samples_section(run_dir: Path, out_dir: Path) -> str:
    frames = sample_frames(run_dir)
    if not frames:
        return '<p class="note">no sample grids in samples/</p>'
    anim = write_animation(frames, out_dir / ANIMATION)
    shown = spread(frames, MAX_FRAMES)
    imgs = []
    for i, fr in enumerate(shown):
        tag = _img(png_bytes(fr.path), f"samples at {fr.label}", pixels=True)
        hidden = "" if i == len(shown) - 1 else " hidden"
        imgs.append(tag.replace("<img ", f'<img data-label="{e(fr.label)}"{hidden} ', 1))
    n = len(shown)
    note = f" ({n} of {len(frames)} shown, evenly spread)" if n < len(frames) else ""
    body = (
        f'<div class="scrub"><button id="play" type="button">Play</button>'
        f'<input id="scrub" type="range" min="0" max="{n - 1}" value="{n - 1}" '
        f'aria-label="training progress"><span id="frame-label">{e(shown[-1].label)}</span></div>'
        f'<div id="frames">{"".join(imgs)}</div>'
        f"<p>Fixed noise through training{e(note)}."
    )
    if anim is not None:
        body += f' Animation: <a href="{ANIMATION}">{ANIMATION}</a>.'
    return body + "</p>"


def _interpolation_section(run_dir: Path) -> str:
    from .latent import interpolation

    try:
        png = interpolation(run_dir)
    except (GanforgeError, RuntimeError, ValueError) as err:
        return f'<p class="note">no interpolation: {e(str(err))}</p>'
    return (
        _img(png, "latent interpolation", pixels=True)
        + "<p>Spherical interpolation between random latent vectors through the final G.</p>"
    )


def build_page(run_dir: Path, out_dir: Path) -> str:
    """The report's HTML text; writes the sample animation into ``out_dir`` on the way."""
    cfg_text = _read(run_dir / "config.yaml") or ""
    try:
        cfg = yaml.safe_load(cfg_text) or {}
    except yaml.YAMLError:
        cfg = {}
    cfg = cfg if isinstance(cfg, dict) else {}
    try:
        env = json.loads(_read(run_dir / "env.json") or "{}")
    except ValueError:
        env = {}
    log = read_log(run_dir)
    state = run_state(run_dir)
    name, recipe = run_dir.resolve().name, cfg.get("recipe", "?")

    sec: list[str] = [
        f"<h1>{e(name)}</h1>",
        f'<p class="sub">recipe <b>{e(str(recipe))}</b> &middot; '
        f'<span class="status-{e(state)}">{e(state)}</span>'
        f"{(' &middot; ' + e(str(cfg['description']))) if cfg.get('description') else ''}</p>",
        _table(_facts(run_dir, cfg, log, env)),
        "<h2>Training curves</h2>",
    ]
    figs = [
        (plots.loss_plot(log.train), "D and G losses"),
        (plots.d_output_plot(log.train), "discriminator outputs"),
        (plots.throughput_plot(log.train), "throughput"),
    ]
    figs = [_img(p, alt) for p, alt in figs if p]
    sec.append(
        f'<div class="row">{"".join(figs)}</div>' if figs else '<p class="note">no log yet</p>'
    )
    if log.evals or (run_dir / "metrics.json").exists():
        sec += ["<h2>Quality metrics</h2>", _metrics_section(run_dir, log.evals)]
    sec += [
        "<h2>Samples through training</h2>",
        _samples_section(run_dir, out_dir),
        "<h2>Final samples</h2>",
    ]
    final = run_dir / "final.png"
    sec.append(
        _img(png_bytes(final), "final samples", pixels=True)
        if final.exists()
        else '<p class="note">no final.png (the run has not finished)</p>'
    )
    sec += ["<h2>Latent interpolation</h2>", _interpolation_section(run_dir)]
    for title, fname in (("Model", "summary.txt"), ("Config", "config.yaml")):
        text = _read(run_dir / fname)
        if text:
            sec += [f"<h2>{title} <small>({fname})</small></h2>", f"<pre>{e(text)}</pre>"]
    if env:
        sec += ["<h2>Environment</h2>", _table(sorted((k, str(v)) for k, v in env.items()))]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    sec.append(f'<p class="note">written by ganforge report on {stamp}</p>')
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>ganforge report: {e(name)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(sec)
        + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the run's report (default ``RUN_DIR/report.html``) and return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GanforgeError(f"{run_dir}: no such run directory")
    if not (run_dir / "config.yaml").exists() and not (run_dir / "log.jsonl").exists():
        raise GanforgeError(f"{run_dir}: not a ganforge run directory (no config.yaml, no log)")
    out = Path(out) if out else run_dir / REPORT
    check_output_file(out, f"report {run_dir}")  # before any work: a folder, read-only
    page = build_page(run_dir, out.parent)
    atomic_write_text(out, page)  # a full disk keeps the previous report
    return out


def report_after_training(run_dir: Path, say: Callable[[str], None] | None = None) -> Path | None:
    """The loop's end-of-training report: a failure here is told, never fatal to the run."""
    try:
        path = write_report(run_dir)
    except Exception as err:  # the run itself is complete and saved; the page is a nicety
        if say:
            say(
                f"report.html not written ({type(err).__name__}: {err}); "
                f"try 'ganforge report {run_dir}'"
            )
        return None
    if say:
        say(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return path
