"""``ganforge compare RUN RUN ...``: one self-contained HTML page of several runs side by side.

Sections: the runs (recipe, status, steps, wall time), their configs as a diff (only the keys
whose values differ), loss and metric curves overlaid (one colour per run), the final grids
side by side, and a metrics table (training evaluations and ``ganforge evaluate``). Images
are data URIs and the page has no script: it opens anywhere, with no network.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from ..errors import GanforgeError
from ..files import load_yaml
from ..metrics import history
from ..runfiles import atomic_write_text, check_output
from . import plots
from .anim import png_bytes
from .html import CSS, _img, _table
from .runlog import (
    auto_weight,
    best_eval,
    hms,
    metric_numbers,
    numbers,
    read_log,
    run_state,
    smooth,
    wall_time,
)
from .runs import is_run

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
SKIP_KEYS = ("description", "source")  # prose, not settings
e = html.escape


def _config(run_dir: Path) -> dict[str, Any]:
    try:
        raw = load_yaml((run_dir / "config.yaml").read_bytes())
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return raw if isinstance(raw, dict) else {}


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Every leaf of a nested mapping as dotted key -> its YAML text (lists inline)."""
    out: dict[str, str] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):  # an empty mapping has no settings to compare
            out.update(flat(v, key + "."))
        else:
            text = yaml.safe_dump(v, default_flow_style=True, width=10**6).strip()
            out[key] = text.removesuffix("\n...").strip()
    return out


def config_diff(configs: Sequence[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(key, value in each run) for the keys whose values differ (absent: '-')."""
    flats = [flat({k: v for k, v in c.items() if k not in SKIP_KEYS}) for c in configs]
    keys: list[str] = []
    for f in flats:
        keys += [k for k in f if k not in keys]
    rows = []
    for k in keys:
        vals = [f.get(k, "-") for f in flats]
        if len(set(vals)) > 1:
            rows.append((k, vals))
    return rows


def _overlay(
    runs: Sequence[tuple[str, list[dict[str, Any]]]], key: str, title: str
) -> bytes | None:
    """One line per run of log key ``key`` over steps (smoothed as in the report)."""
    fig = Figure(figsize=(5.8, 3.4))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.15, top=0.9)
    ax = fig.add_subplot()
    drawn = False
    for i, (label, recs) in enumerate(runs):
        pts = [(r["step"], r[key]) for r in recs if isinstance(r.get(key), (int, float))]
        if not pts:
            continue
        steps, vals = zip(*pts, strict=True)
        w = auto_weight(len(vals))
        ax.plot(steps, smooth(vals, w), color=f"C{i % 10}", linewidth=2, label=label)
        if w > 0:
            ax.plot(steps, vals, color=f"C{i % 10}", alpha=0.2, linewidth=1)
        drawn = True
    if not drawn:
        return None
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return plots.to_png(fig)


def _metric_overlays(runs: Sequence[tuple[str, list[dict[str, Any]]]]) -> list[bytes]:
    """One panel per evaluation metric logged during training, a line per run."""
    series: list[tuple[str, list[dict[str, Any]]]] = []
    names: list[str] = []
    for label, evals in runs:
        recs = [{"step": r["step"], **metric_numbers(r["eval"])} for r in evals]
        series.append((label, recs))
        for r in recs:
            names += [k for k in r if k != "step" and k not in names]
    out = []
    for name in names:
        arrow = history.arrow(name)
        png = _overlay(series, name, f"{name} {arrow}".strip())
        if png:
            out.append(png)
    return out


def _label(run_dir: Path, names: Sequence[str]) -> str:
    return run_dir.resolve().name if names.count(run_dir.resolve().name) == 1 else str(run_dir)


def build_page(run_dirs: Sequence[Path]) -> str:
    """The comparison page's HTML text."""
    names = [Path(r).resolve().name for r in run_dirs]
    labels = [_label(Path(r), names) for r in run_dirs]
    configs = [_config(Path(r)) for r in run_dirs]
    logs = [read_log(Path(r)) for r in run_dirs]
    sec = [
        f"<h1>ganforge compare: {len(run_dirs)} runs</h1>",
        f'<p class="sub">{" &middot; ".join(e(lb) for lb in labels)}</p>',
    ]
    rows = []
    for lb, r, c, log in zip(labels, run_dirs, configs, logs, strict=True):
        rows.append(
            [lb, str(c.get("recipe", "?")), run_state(Path(r)), f"{log.last_step:,}"]
            + [hms(wall_time(log.train))]
        )
    sec += ["<h2>Runs</h2>", _table(rows, ["run", "recipe", "status", "steps", "wall time"])]

    diff = config_diff(configs)
    sec.append("<h2>Config differences</h2>")
    if diff:
        sec.append(_table([[k, *v] for k, v in diff], ["key", *labels]))
        n = f"{len(diff)} key{'s' * (len(diff) != 1)}"
        sec.append(
            f"<p>Only the {n} whose values differ {'are' if len(diff) != 1 else 'is'} shown.</p>"
        )
    else:
        sec.append('<p class="note">the configs are identical</p>')

    sec.append("<h2>Training curves</h2>")
    trains = list(zip(labels, [log.train for log in logs], strict=True))
    figs = [
        (_overlay(trains, "loss_d", "D loss"), "D loss, one line per run"),
        (_overlay(trains, "loss_g", "G loss"), "G loss, one line per run"),
        (_overlay(trains, "d_real", "D(x), real"), "D on real data, one line per run"),
        (_overlay(trains, "d_fake", "D(G(z)), generated"), "D on generated, one line per run"),
    ]
    imgs = [_img(p, alt) for p, alt in figs if p]
    sec.append(f'<div class="row">{"".join(imgs)}</div>' if imgs else '<p class="note">no logs</p>')
    evals = list(zip(labels, [log.evals for log in logs], strict=True))
    metric_imgs = _metric_overlays(evals)
    if metric_imgs:
        sec.append("<h2>Evaluation during training</h2>")
        sec.append(
            '<div class="row">'
            + "".join(_img(p, "evaluation metric, one line per run") for p in metric_imgs)
            + "</div>"
        )

    sec.append("<h2>Final samples</h2>")
    cells = []
    for lb, r in zip(labels, run_dirs, strict=True):
        final = Path(r) / "final.png"
        body = (
            _img(png_bytes(final), f"final samples of {lb}", pixels=True)
            if final.exists()
            else '<p class="note">no final.png</p>'
        )
        cells.append(f"<figure>{body}<figcaption>{e(lb)}</figcaption></figure>")
    sec.append(f'<div class="row">{"".join(cells)}</div>')

    sec.append("<h2>Metrics</h2>")
    sec.append(_metrics_table(labels, run_dirs, logs))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    sec.append(f'<p class="note">written by ganforge compare on {stamp}</p>')
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>ganforge compare: {e(', '.join(labels))}</title><style>{CSS}</style></head>\n"
        "<body>\n" + "\n".join(sec) + "\n</body></html>\n"
    )


def _metrics_table(labels: Sequence[str], run_dirs: Sequence[Path], logs: Sequence[Any]) -> str:
    """Per metric: each run's best training evaluation, last one, and newest ``evaluate``."""
    cols: list[tuple[str, dict[str, float]]] = []
    for lb, r, log in zip(labels, run_dirs, logs, strict=True):
        last = metric_numbers(log.evals[-1]["eval"]) if log.evals else {}
        best = best_eval(log.evals)
        at_best = metric_numbers(best["eval"]) if best else {}
        recs = history.read(Path(r))
        ev = numbers(recs[-1]["metrics"]) if recs else {}
        ev.pop("eval_s", None)
        cols.append((lb, {**{f"{k} (last, training)": v for k, v in last.items()}}))
        cols[-1][1].update({f"{k} (best checkpoint)": v for k, v in at_best.items()})
        cols[-1][1].update({f"{k} (ganforge evaluate)": v for k, v in ev.items()})
    keys: list[str] = []
    for _, c in cols:
        keys += [k for k in c if k not in keys]
    if not keys:
        return '<p class="note">no evaluations: run ganforge evaluate RUN, or set eval.every</p>'
    rows = []
    for k in sorted(keys):
        arrow = history.arrow(k.split(" ")[0])
        rows.append([f"{k} {arrow}".strip(), *[c.get(k, "") for _, c in cols]])
    return _table(rows, ["metric", *labels])


def write_compare(run_dirs: Sequence[Path], out: Path) -> Path:
    """Write the comparison page to ``out`` atomically; returns its path."""
    run_dirs = [Path(r) for r in run_dirs]
    if len(run_dirs) < 2:
        raise GanforgeError("compare needs at least two run directories")
    for r in run_dirs:
        if not is_run(r):
            raise GanforgeError(f"{r}: not a ganforge run directory (no config.yaml)")
    out = Path(out)
    check_output(out, f"-o {out}", reads=run_dirs)  # before any work
    page = build_page(run_dirs)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)  # a full disk keeps the previous page: one line
    return out


def describe(out: Path) -> str:
    """The line ``ganforge compare`` prints."""
    return f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)"
