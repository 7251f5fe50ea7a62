"""Command line: parse, validate, call. One function per subcommand.

Every user-facing problem is a ``GanforgeError`` printed as one line (exit code 2).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import GanforgeError

if TYPE_CHECKING:
    import torch

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ganforge",
        description="Train, evaluate and show generative adversarial networks.",
    )
    p.add_argument("--version", action="version", version=f"ganforge {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("recipes", help="list the recipes (data, shapes, parameters, source)")
    r.add_argument("--show", metavar="NAME", help="print one recipe's config and model summary")
    r.set_defaults(func=cmd_recipes)

    t = sub.add_parser("train", help="train a recipe into a run directory")
    t.add_argument("-r", "--recipe", default=None, help="recipe name (default vanilla-fmnist)")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. train.epochs=5 (repeatable)",
    )
    t.add_argument("--data", metavar="PATH", help="where the data set is (sets data.path)")
    t.add_argument("--out", metavar="DIR", help="run directory (default runs/<recipe>-<time>)")
    t.add_argument("--seed", type=int, metavar="N", help="random seed (sets train.seed)")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), help="sets train.device")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="with --out DIR holding a run: move that run aside (DIR.replaced-<time>, still "
        "resumable there) and start a fresh one in DIR",
    )
    t.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _trust_flag(t, "with --resume: ")
    t.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard events to RUN_DIR/tensorboard (sets train.tensorboard)",
    )
    t.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train with N processes on this machine (launches torchrun; see docs/distributed.md)",
    )
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="write a grid of samples from a trained generator")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument("-o", "--output", help="PNG file (default samples.png), or folder for dir")
    s.add_argument(
        "--format",
        choices=("grid", "dir"),
        default="grid",
        help="grid: one PNG (default); dir: one PNG per sample in folder -o (default samples/)",
    )
    s.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    s.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default=None,
        help="which checkpoint (default: best if present, else last)",
    )
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument(
        "--class",
        dest="class_",
        type=int,
        metavar="K",
        help="class-conditional runs: all samples of class K (default: every class in turn)",
    )
    _trust_flag(s)
    s.set_defaults(func=cmd_sample)

    x = sub.add_parser("export", help="export the sampling generator to ONNX or TorchScript")
    x.add_argument("run_dir", metavar="RUN_DIR")
    x.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    x.add_argument("-o", "--output", help="file to write (default RUN_DIR/generator.onnx|.pt)")
    x.add_argument("--checkpoint", choices=("best", "last"), default=None, help="default: best")
    _trust_flag(x)
    x.set_defaults(func=cmd_export)

    rp = sub.add_parser("report", help="write RUN_DIR/report.html: curves, samples, summary")
    rp.add_argument("run_dir", metavar="RUN_DIR")
    rp.add_argument("--open", action="store_true", help="open it in the default browser")
    _trust_flag(rp)
    rp.set_defaults(func=cmd_report)

    c = sub.add_parser("compare", help="one HTML page comparing runs: configs, curves, samples")
    c.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    c.add_argument("-o", "--output", default="compare.html", help="default: ./compare.html")
    c.set_defaults(func=cmd_compare)

    ru = sub.add_parser("runs", help="list the runs in a folder with their progress and status")
    ru.add_argument("dir", metavar="DIR", nargs="?", default="runs", help="default: ./runs")
    ru.set_defaults(func=cmd_runs)

    e = sub.add_parser("evaluate", help="sample quality of a run -> RUN_DIR/metrics.json(l)")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--n", type=int, default=None, help="samples (default 10000; 2-D: 2500)")
    e.add_argument("--reference", choices=("test", "train"), default="test", help="real split")
    e.add_argument(
        "--metrics",
        default=None,
        help="comma list of fd,pr,is,coverage | fid,kid,inception-is | points "
        "(default: the classifier set where an evaluator exists, points for 2-D data, "
        "else Inception's)",
    )
    e.add_argument("--checkpoint", choices=("best", "last"), default=None, help="default: best")
    e.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    e.add_argument("--inception-weights", metavar="PATH", help="torch-fidelity Inception .pth")
    e.add_argument(
        "--real", metavar="DIR", help="compare with this folder of images (Inception metrics)"
    )
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    _trust_flag(e)
    e.set_defaults(func=cmd_evaluate)

    ev = sub.add_parser("evaluator", help="domain classifiers behind FD, precision/recall, IS")
    ev_sub = ev.add_subparsers(dest="evaluator_command", metavar="ACTION")
    evt = ev_sub.add_parser("train", help="train and cache the evaluator of a labelled data set")
    evt.add_argument("--dataset", required=True, help="e.g. fashion-mnist, mnist, svhn, cifar10")
    evt.add_argument("--data", metavar="PATH", help="where the data set is (as for train)")
    evt.add_argument("--out", metavar="DIR", help="folder to write to (default: the cache)")
    evt.set_defaults(func=cmd_evaluator_train)
    return p


def _trust_flag(p: argparse.ArgumentParser, when: str = "") -> None:
    """--trust-code on a command that opens a run directory (docs/reliability.md, Trust)."""
    p.add_argument(
        "--trust-code",
        action="store_true",
        help=f"{when}import the code the run's config.yaml names by import path (refused "
        "by default: a run directory is data; also GANFORGE_TRUST_CODE=1)",
    )


def cmd_recipes(args: argparse.Namespace) -> int:
    """Table of recipes, or one recipe's resolved config and model summary."""
    from rich.console import Console
    from rich.table import Table

    from .config import load_config, recipe_names, to_dict
    from .data import data_shape
    from .nets import build_discriminator, build_generator, count_params

    console = Console()
    if args.show:
        import yaml

        from .summary import summarize

        cfg = load_config(args.show)
        shape = data_shape(cfg.data)
        import torch

        g, d = build_generator(cfg.model, shape), build_discriminator(cfg.model, shape)
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        z, x = torch.zeros(2, cfg.model.z_dim), torch.zeros(2, *shape)
        if cfg.model.num_classes:  # conditional nets also take (2,) labels
            y = torch.zeros(2, dtype=torch.long)
            print(summarize(g, (z, y), f"Generator '{cfg.model.g}'"))
            print(summarize(d, (x, y), f"Discriminator '{cfg.model.d}'"))
        else:
            print(summarize(g, z, f"Generator '{cfg.model.g}'"))
            print(summarize(d, x, f"Discriminator '{cfg.model.d}'"))
        return 0
    table = Table(title="ganforge recipes")
    for col in ("recipe", "data", "shape", "G params", "D params", "source"):
        # names and counts are what the table is for: never wrap or cut them
        table.add_column(
            col,
            justify="right" if "params" in col else "left",
            no_wrap=col != "source",
            min_width=len(col),
        )
    for name in recipe_names():
        cfg = load_config(name)
        shape = data_shape(cfg.data)
        g, d = build_generator(cfg.model, shape), build_discriminator(cfg.model, shape)
        table.add_row(
            name,
            cfg.data.name,
            "x".join(map(str, shape)),
            f"{count_params(g):,}",
            f"{count_params(d):,}",
            cfg.source.split(" (")[0],  # the short name; --show prints the whole config
        )
    console.print(table)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a recipe (or continue a run) through the library's ``train`` / ``resume``."""
    from . import api

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={args.data}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.tensorboard:
        overrides.append("train.tensorboard=true")
    if args.nproc is not None:
        return _launch_torchrun(args)

    verbose = not args.quiet
    if args.resume:
        if args.recipe or args.out or args.overwrite:
            raise GanforgeError(
                "--resume continues a run in place; drop --recipe, --out and --overwrite"
            )
        run = api.resume(args.resume, overrides=overrides, verbose=verbose)
    else:
        if not args.out and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise GanforgeError(
                "under torchrun give --out DIR: every process must name the same run directory"
            )
        recipe = args.recipe or "vanilla-fmnist"
        run = api.train(
            recipe, out=args.out, overrides=overrides, verbose=verbose, overwrite=args.overwrite
        )
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 speaks for the job
    result = run.result
    if result.get("complete"):  # resumed at its end: nothing trained, nothing written
        print(f"{run.dir} is already complete at step {result['steps']:,}; nothing to do "
              "(to train longer: --resume with --set train.iterations=N)")  # fmt: skip
        return 0
    print(
        f"done: {result['steps']:,} steps, {result['images']:,} images in "
        f"{result['wall_s']:.1f} s ({result['img_s']:,.0f} img/s); run directory: {run.dir}"
    )
    return 0


def _launch_torchrun(args: argparse.Namespace) -> int:
    """``train --nproc N``: run the same command under torchrun (--standalone) on N processes.

    torchrun's agent runs in this process (``torch.distributed.run.run``, as the ``torchrun``
    script does), so a failed job ends with one summary line naming the rank that failed and
    how, instead of torchrun's traceback and table; the exit code is that rank's (2, 3, 143,
    ...; 128 + the signal if it was killed), as a single-process ``ganforge train`` would give.
    """
    import signal

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from .errors import EXIT_PEER_LOST

    if args.nproc < 1:
        raise GanforgeError(f"--nproc {args.nproc}: the number of processes must be positive")
    if "WORLD_SIZE" in os.environ:
        raise GanforgeError("--nproc launches torchrun itself; drop it when already under torchrun")
    argv = list(args.argv)
    i = argv.index("train")
    rest, drop = [], False
    for a in argv[i + 1 :]:  # the same arguments without --nproc N / --nproc=N, --overwrite
        if drop:
            drop = False
        elif a == "--nproc":
            drop = True
        elif not a.startswith("--nproc=") and not (a == "--overwrite" and not args.resume):
            rest.append(a)
    if args.overwrite and args.out and not args.resume:  # here, before the processes start
        from .runfiles import holds_run, set_aside

        if holds_run(Path(args.out)):
            moved = set_aside(Path(args.out))
            print(f"ganforge: moved the run in {args.out} to {moved} (resumable there)")
    if not args.resume and not args.out:
        from .api import make_config, new_run_dir

        rest += ["--out", str(new_run_dir(make_config(args.recipe or "vanilla-fmnist").recipe))]
    cmd = ["--standalone", "--nproc-per-node", str(args.nproc)]
    cmd += ["-m", "ganforge", *argv[:i], "train", *rest]
    try:
        torchrun.run(torchrun.parse_args(cmd))
    except ChildFailedError as e:
        # exit code < 0: killed by that signal; EXIT_PEER_LOST: stopped because another failed
        failed = sorted(e.failures.items())
        causes = [(r, f) for r, f in failed if f.exitcode != EXIT_PEER_LOST]
        followers = [str(r) for r, f in failed if f.exitcode == EXIT_PEER_LOST]
        parts = [
            f"rank {r} killed by {f.signal_name()}"
            if f.exitcode < 0
            else f"rank {r} exited with code {f.exitcode}"
            for r, f in causes
        ]
        if followers:
            parts.append(
                f"rank{'s' * (len(followers) > 1)} {', '.join(followers)} then lost contact "
                f"and stopped (code {EXIT_PEER_LOST})"
            )
        print(f"ganforge: error: the job failed: {'; '.join(parts)}", file=sys.stderr)
        code = causes[0][1].exitcode if causes else EXIT_PEER_LOST
        return 128 - code if code < 0 else code
    except SignalException as e:  # this launcher was signalled; torchrun stopped the workers
        print(f"ganforge: stopped by {signal.Signals(e.sigval).name}", file=sys.stderr)
        return 128 + int(e.sigval)
    return 0


def sample_labels(
    n: int, num_classes: int | None, k: int | None, run: str = "the run"
) -> tuple[torch.Tensor | None, int]:
    """Labels (n,) for ``sample`` and the grid's column count.

    Unconditional runs: no labels (``--class`` is an error), a square-ish grid. ``--class k``:
    all n of class k. Otherwise every class in turn, balanced: with n a multiple of the class
    count, one class per row; else i % num_classes, one class per column.
    """
    import torch

    square = math.ceil(math.sqrt(n))
    if num_classes is None:
        if k is not None:
            raise GanforgeError(
                f"--class {k}: {run} is not class-conditional (no model.num_classes); drop --class"
            )
        return None, square
    if k is not None:
        if not 0 <= k < num_classes:
            raise GanforgeError(
                f"--class {k}: out of range; {run} has {num_classes} classes, 0-{num_classes - 1}"
            )
        return torch.full((n,), k, dtype=torch.long), square
    if n % num_classes == 0:
        cols = n // num_classes
        return torch.arange(n) // cols, cols  # row r: class r
    return torch.arange(n) % num_classes, min(n, num_classes)  # column c: class c


def cmd_sample(args: argparse.Namespace) -> int:
    """Grid (or scatter, for 2-D data) of ``n`` samples from a run's saved generator; of one
    class (``--class``) or of every class in turn for a class-conditional run."""
    from . import api
    from .arguments import seed as check_seed
    from .data import data_shape
    from .runfiles import check_output
    from .visual import check_format, render

    if args.n <= 0:
        raise GanforgeError(f"-n {args.n}: the number of samples must be positive")
    check_seed(args.seed, "--seed ")
    from .config import read_config
    from .runfiles import RunPin

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise GanforgeError(f"{run_dir}: no such run directory")
    cfg = read_config(run_dir / "config.yaml")
    y, cols = sample_labels(args.n, cfg.model.num_classes, args.class_, str(run_dir))
    if args.format == "dir":  # one PNG per sample (export.py)
        from .arguments import count
        from .export import sample_dir
        from .seeding import resolve_device

        count(args.n, "-n ", cfg.model.z_dim)  # the noise of all n is drawn at once

        out = Path(args.output or "samples")
        device = resolve_device(args.device)
        print(sample_dir(run_dir, args.n, out, args.seed, args.checkpoint, device, y))
        return 0
    out = Path(args.output or "samples.png")  # its format and folder are checked before work
    check_output(out, f"-o {out}", reads=[run_dir])
    check_format(out, len(data_shape(cfg.data)) == 1, args.n)
    with RunPin(run_dir, "it was sampled") as pin:  # -o inside the run: into the run sampled
        run = api.load_pinned(
            pin, args.checkpoint or "best", device=args.device, fallback=not args.checkpoint
        )
        fake = run.sample(args.n, seed=args.seed, labels=y)
        ckpt = run.checkpoint
        assert ckpt is not None  # load() always finds one
        out = pin.place(out)
        render(fake, out, (math.ceil(args.n / cols), cols), run.config.data.range, title=str(ckpt))
    of = f" of class {args.class_}" if args.class_ is not None else ""
    print(f"wrote {args.n} samples{of} from {run.sampled_with} of {ckpt} to {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write the sampling G as an ONNX or TorchScript file with a dynamic batch size."""
    from .export import describe, export_run

    out, s = export_run(Path(args.run_dir), args.format, args.output, args.checkpoint)
    print(describe(out, s, args.format))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Write one self-contained HTML page comparing runs (report/compare.py)."""
    from .report.compare import describe, write_compare

    print(describe(write_compare([Path(r) for r in args.run_dirs], Path(args.output))))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write a run's self-contained HTML report; optionally open it in a browser."""
    import webbrowser

    from .report.html import write_report

    path = write_report(Path(args.run_dir))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if args.open:
        try:
            opened = webbrowser.open(path.resolve().as_uri())
        except webbrowser.Error:
            opened = False
        if not opened:
            print("no browser could be started here; open the file yourself")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """Table of the runs under DIR: recipe, progress, FD, wall time, status."""
    from .report.runs import list_runs, print_runs

    root = Path(args.dir)
    if not root.is_dir():
        raise GanforgeError(f"{root}: no such folder (train a run with 'ganforge train' first)")
    runs = list_runs(root)
    if not runs:
        print(f"no runs in {root}")
        return 0
    print_runs(root, runs)  # report/runs.py
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Write RUN_DIR/metrics.json: the metrics of the best (or last) generator, with protocol."""
    from .arguments import seed as check_seed
    from .metrics.evaluate import evaluate_run

    if args.n is not None and args.n < 10:
        raise GanforgeError(f"--n {args.n}: use at least 10 samples")
    check_seed(args.seed, "--seed ")
    out, result = evaluate_run(
        Path(args.run_dir),
        checkpoint=args.checkpoint,
        device=args.device,
        metrics=args.metrics,
        n=args.n,
        reference=args.reference,
        seed=args.seed,
        inception_weights=args.inception_weights,
        real_dir=args.real,
    )
    from .metrics.history import lines

    print("\n".join(lines(result)))
    ck, g = result["protocol"]["checkpoint"], result["protocol"].get("generator", "G")
    print(
        f"wrote {out} and appended to metrics.jsonl ({g} of the {ck['tag']} checkpoint, "
        f"step {ck['step']}, n={result['protocol']['n']})"
    )
    return 0


def cmd_evaluator_train(args: argparse.Namespace) -> int:
    """Train the domain classifier of a data set and store it (cache, or --out)."""
    from .metrics.features import build_evaluator

    build_evaluator(args.dataset, args.data, Path(args.out) if args.out else None)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``ganforge ARGV``: the exit code. A reader of stdout that goes away (``| head``) ends
    nothing: the rest of the output is dropped (streams.py)."""
    from .streams import guarded

    with guarded():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for train --nproc
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    from .errors import COMMAND_LINE
    from .trust import trust_code_here

    said = COMMAND_LINE.set(True)  # messages name this command's flags, not Python keywords
    try:
        with trust_code_here(getattr(args, "trust_code", False)):
            return args.func(args)
    except GanforgeError as e:
        from .errors import Preempted  # a stop by signal is not an error

        kind = "" if isinstance(e, Preempted) else "error: "
        one_line = str(e).replace("\n", "\\n")  # a path may hold a newline: still one line
        print(f"ganforge: {kind}{one_line}", file=sys.stderr)
        return getattr(e, "exit_code", EXIT_USAGE)
    except KeyboardInterrupt:
        print("ganforge: interrupted", file=sys.stderr)
        return 130
    finally:
        COMMAND_LINE.reset(said)


if __name__ == "__main__":
    sys.exit(main())
