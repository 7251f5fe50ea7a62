"""Command line: parse, validate, call. One function per subcommand.

Every user-facing problem is a ``GanforgeError`` printed as one line (exit code 2).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from .errors import GanforgeError

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ganforge",
        description="Train, evaluate and show generative adversarial networks.",
    )
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
    t.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="write a grid of samples from a trained generator")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument("-o", "--output", default="samples.png", help="PNG file to write")
    s.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    s.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default=None,
        help="which checkpoint (default: best if present, else last)",
    )
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.set_defaults(func=cmd_sample)
    return p


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
        print(summarize(g, torch.zeros(2, cfg.model.z_dim), f"Generator '{cfg.model.g}'"))
        print(summarize(d, torch.zeros(2, *shape), f"Discriminator '{cfg.model.d}'"))
        return 0
    table = Table(title="ganforge recipes")
    for col in ("recipe", "data", "shape", "G params", "D params", "source"):
        table.add_column(col, justify="right" if "params" in col else "left")
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
            cfg.source,
        )
    console.print(table)
    return 0


def _new_run_dir(recipe: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{recipe}-{stamp}"
    i = 1
    while path.exists():
        i += 1
        path = Path("runs") / f"{recipe}-{stamp}-{i}"
    return path


def cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config, read_config
    from .train.loop import train

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={args.data}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.device:
        overrides.append(f"train.device={args.device}")

    if args.resume:
        if args.recipe or args.out:
            raise GanforgeError("--resume continues a run in place; drop --recipe and --out")
        run_dir = Path(args.resume)
        if not run_dir.is_dir():
            raise GanforgeError(f"--resume {run_dir}: no such run directory")
        cfg = read_config(run_dir / "config.yaml", overrides)
    else:
        cfg = load_config(args.recipe, overrides)
        run_dir = Path(args.out) if args.out else _new_run_dir(cfg.recipe)
        if (run_dir / "config.yaml").exists():
            raise GanforgeError(
                f"--out {run_dir} already holds a run; continue it with --resume {run_dir} "
                "or choose another --out"
            )
    result = train(cfg, run_dir, resume=bool(args.resume), verbose=not args.quiet)
    print(
        f"done: {result['steps']:,} steps, {result['images']:,} images in "
        f"{result['wall_s']:.1f} s ({result['img_s']:,.0f} img/s); run directory: {run_dir}"
    )
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """Grid (or scatter, for 2-D data) of ``n`` samples from a run's saved generator."""
    import torch

    from . import nets
    from .config import read_config
    from .data import data_shape
    from .train.checkpoint import find_checkpoint, load_weights
    from .train.loop import mix_seed, resolve_device
    from .visual import render

    if args.n <= 0:
        raise GanforgeError(f"-n {args.n}: the number of samples must be positive")
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise GanforgeError(f"{run_dir}: no such run directory")
    cfg = read_config(run_dir / "config.yaml")
    device = resolve_device(args.device)
    prefer = (args.checkpoint,) if args.checkpoint else ("best", "last")
    ckpt = find_checkpoint(run_dir, prefer)
    g = nets.build_generator(cfg.model, data_shape(cfg.data)).to(device)
    g.load_state_dict(load_weights(ckpt, "g", device))
    g.eval()
    gen = torch.Generator().manual_seed(mix_seed(args.seed))
    z = nets.sample_noise(args.n, cfg.model.z_dim, cfg.model.z_dist, gen, "cpu").to(device)
    with torch.no_grad():
        fake = g(z)
    cols = math.ceil(math.sqrt(args.n))
    out = Path(args.output)
    render(fake, out, (math.ceil(args.n / cols), cols), cfg.data.range, title=str(ckpt))
    print(f"wrote {args.n} samples from {ckpt} to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except GanforgeError as e:
        print(f"ganforge: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ganforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
