"""``RUN_DIR/report.html``: one self-contained page about a run (images as data URIs, no network).

Sections: facts (status, length, wall time, throughput), training curves, evaluation metrics,
fixed-noise samples through training (a scrubber, plus ``progress.gif`` beside the page), the
final grid, a latent interpolation from the final generator, model summary, config, environment.
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from ..errors import GanforgeError
from ..files import load_json, load_yaml
from ..runfiles import RunPin, atomic_write_text, check_output
from ..trust import check_run_dir
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
    train: dict[str, Any] = cfg["train"] if isinstance(cfg.get("train"), dict) else {}
    total = st.get("total_steps") or train.get("iterations")
    total = total if type(total) is int and total > 0 else None  # hand-edited files: any type
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
    gen = _sampling_generator(run_dir, cfg)
    if gen:
        rows.append(("samples, final.png, evaluation drawn by", gen))
    device = env.get("gpu") or env.get("device")
    if device:
        rows.append(("device", device))
    prec = env.get("precision")
    if isinstance(prec, dict) and isinstance(prec.get("chosen"), str):  # auto: why, too
        why = prec.get("why")
        asked = f"{prec.get('asked')} -> " if prec.get("asked") == "auto" else ""
        rows.append(("precision", f"{asked}{prec['chosen']}" + (f" ({why})" if asked else "")))
    for key, name in (("loss_d", "final D loss"), ("loss_g", "final G loss")):
        if key in last:
            rows.append((name, last[key]))
    if "d_real" in last and "d_fake" in last:
        rows.append(("final D(x) / D(G(z))", f"{last['d_real']:.3f} / {last['d_fake']:.3f}"))
    return [(k, _fmt(v)) for k, v in rows]  # all text: one alignment in the table


def _sampling_generator(run_dir: Path, cfg: dict[str, Any]) -> str:
    """Which G the run samples with: the EMA of G (its decay, start, updates) or G."""
    from ..checkpoint import checkpoint_generator

    model = cfg.get("model") or {}
    if not isinstance(model, dict) or model.get("ema") is None:
        return "G"
    which = checkpoint_generator(run_dir / "checkpoints" / "last")
    if which == "G":  # the EMA had not begun averaging at the last checkpoint
        which = "G (the EMA had not started yet)"
    return f"{which}; model.ema={model['ema']}, model.ema_start={model.get('ema_start', 0)}"


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
    parts.append(_history_section(run_dir))
    text = _read(run_dir / "metrics.json")
    if text is not None:
        parts.append("<h3>metrics.json (the latest evaluation)</h3>")
        try:
            data = load_json(text)
            flat = numbers(data) if isinstance(data, dict) else {}
            if flat:
                parts.append(_table(sorted(flat.items()), ["key", "value"]))
        except ValueError:
            pass
        parts.append(f"<details><summary>raw</summary><pre>{e(text)}</pre></details>")
    return "\n".join(parts)


def _history_section(run_dir: Path) -> str:
    """Every ``ganforge evaluate`` of the run (metrics.jsonl), each metric's direction, and
    the real-vs-real floor where it is known."""
    from ..metrics import history

    recs = history.read(run_dir)
    if not recs:
        return ""
    keys: list[str] = []
    for r in recs:
        for k, v in r["metrics"].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "eval_s":
                if k not in keys:
                    keys.append(k)
    head = ["when", "checkpoint", "generator", "n"] + [
        f"{k} ({history.direction(k)} is better)" if history.direction(k) else k for k in keys
    ]
    rows = []
    floors = []
    for r in recs:
        ck = r.get("checkpoint") or {}
        proto = r.get("protocol") or {}
        rows.append(
            [str(r.get("time", "")), f"{ck.get('tag', '?')} (step {ck.get('step', '?')})"]
            + [str(proto.get("generator", "G")), str(r.get("n", ""))]
            + [_fmt(r["metrics"][k]) if k in r["metrics"] else "" for k in keys]
        )
        ref = proto.get("reference")
        split = ref.get("split", "test") if isinstance(ref, dict) else "test"
        fl = history.floor(str(r.get("data", "")), r.get("n"), split)
        if fl and fl not in floors:
            floors.append(fl)
            rows.append(["real-vs-real floor", "train vs test images", "-", str(r.get("n"))])
            rows[-1] += [_fmt(fl[k]) if k in fl else "" for k in keys]
    note = (
        "<p>One row per <code>ganforge evaluate</code> (metrics.jsonl). The real-vs-real "
        "floor is the score of real training images against the test images: the best "
        "a generator can do at that n (docs/metrics.md).</p>"
    )
    return "<h3>ganforge evaluate history</h3>" + _table(rows, head) + note


def _samples_section(
    run_dir: Path, out_dir: Path, live: bool = False, place: Callable[[Path], Path] = Path
) -> str:
    frames = sample_frames(run_dir)
    if not frames:
        return '<p class="note">no sample grids in samples/</p>'
    anim = None if live else write_animation(frames, place(out_dir / ANIMATION))
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


def build_page(
    run_dir: Path, out_dir: Path, live: bool = False, place: Callable[[Path], Path] = Path
) -> str:
    """The report's HTML text; writes the sample animation into ``out_dir`` on the way
    (``place``: where a path given as inside the run lies at the moment it is written).
    ``live``: the cheap page refreshed during training (``refresh_report``): no animation,
    no interpolation, and the browser reloads it every 30 s."""
    cfg_text = _read(run_dir / "config.yaml") or ""
    try:
        cfg = load_yaml(cfg_text) or {}
    except yaml.YAMLError:
        cfg = {}
    cfg = cfg if isinstance(cfg, dict) else {}
    try:
        env = load_json(_read(run_dir / "env.json") or "{}")
    except ValueError:
        env = {}
    env = env if isinstance(env, dict) else {}
    log = read_log(run_dir)
    state = run_state(run_dir)
    name, recipe = run_dir.resolve().name, str(cfg.get("recipe", "?"))

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
    if log.evals or (run_dir / "metrics.json").exists() or (run_dir / "metrics.jsonl").exists():
        sec += ["<h2>Quality metrics</h2>", _metrics_section(run_dir, log.evals)]
    sec += [
        "<h2>Samples through training</h2>",
        _samples_section(run_dir, out_dir, live, place),
        "<h2>Final samples</h2>",
    ]
    final = run_dir / "final.png"
    sec.append(
        _img(png_bytes(final), "final samples", pixels=True)
        if final.exists()
        else '<p class="note">no final.png (the run has not finished)</p>'
    )
    if live:
        sec += [
            "<h2>Latent interpolation</h2>",
            '<p class="note">drawn when the run ends (this page is refreshed during '
            "training and reloads itself every 30 s)</p>",
        ]
    else:
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
        + ("<meta http-equiv='refresh' content='30'>" if live else "")
        + f"<title>ganforge report: {e(name)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(sec)
        + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )


def write_report(run_dir: Path, out: Path | None = None, live: bool = False) -> Path:
    """Write the run's report (default ``RUN_DIR/report.html``) and return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GanforgeError(f"{run_dir}: no such run directory")
    if not (run_dir / "config.yaml").exists() and not (run_dir / "log.jsonl").exists():
        raise GanforgeError(f"{run_dir}: not a ganforge run directory (no config.yaml, no log)")
    check_run_dir(run_dir)  # a config that names code to import: refused before any work
    out = Path(out) if out else run_dir / REPORT
    check_output(out, f"report {run_dir}", reads=[run_dir], own=REPORT)  # before any work
    with RunPin(run_dir, "its report was written") as pin:
        root = run_dir
        page = build_page(root, out.parent, live, pin.place)
        if pin.where() != root:  # moved aside (train --overwrite) while read: read it again
            root = pin.where()
            page = build_page(root, pin.place(out).parent, live, pin.place)
        out = pin.place(out)  # into the run the page shows, wherever it is now
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


# ---------------------------------------------------------------- refreshed during training

REFRESH_MIN_S = 30.0  # at most one refresh per this many seconds
REFRESH_COST = 20  # ... and per 20 times the last refresh's own time (<= 5% of the run)
_last_refresh: dict[str, tuple[float, float]] = {}  # run dir -> (when, seconds it took)


def refresh_report(run_dir: Path, force: bool = False) -> Path | None:
    """Rewrite ``RUN_DIR/report.html`` during training, cheaply and atomically: the page
    without animation and interpolation (``live``), first 30 s after the first sample step,
    then at most every 30 s and every 20 times its own cost (<= ~5% of the run). The
    training loop calls it at each sample step; a failure is never fatal to the run (None)."""
    key = str(Path(run_dir).resolve())
    now = time.perf_counter()
    last = _last_refresh.get(key)
    if not force:
        if last is None:  # the first sample step: start the clock (short runs get no page)
            _last_refresh[key] = (now, 0.0)
            return None
        when, cost = last
        if now - when < max(REFRESH_MIN_S, REFRESH_COST * cost):
            return None
    try:
        path = write_report(Path(run_dir), live=True)
    except Exception:  # the run matters more than its page
        path = None
    _last_refresh[key] = (now, time.perf_counter() - now)
    return path
