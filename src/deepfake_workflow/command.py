"""The `deepfake-workflow` command (installed with the project; `python -m deepfake_workflow.command`
works too):

    deepfake-workflow score -c results/models/fold0/best.pt -c results/models/fold1/best.pt photos/ -o scores.csv
    deepfake-workflow check-config configs/cpu-real.yaml --set train.epochs=3

`score`: image paths (files, folders, .txt/.csv lists) in, P(fake) out as CSV img_name,y_pred,
the mean over the given fold checkpoints (the competition's final-phase test API).
`check-config`: validate a config file as the workflow does before any job (schema, local data
folder, parameter budget) and print the effective config, defaults filled in, as YAML.

Not to be confused with cli.py, the plumbing the stage programs in scripts/ share.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .cli import run_main


def _score_parser(sub) -> None:
    from .config import schema_choices
    from .scoring import ON_BAD_IMAGE

    p = sub.add_parser("score", help="score image files with trained checkpoints (CSV img_name,y_pred)",
                       description="Score any images with trained fold models: the mean P(fake) over the "
                                   "checkpoints, as CSV img_name,y_pred.")
    p.add_argument("inputs", nargs="+", type=Path, help="image files, folders, or .txt/.csv lists of paths")
    p.add_argument("-c", "--checkpoint", required=True, type=Path, action="append",
                   help="a best.pt file; repeat to average several (an ensemble)")
    p.add_argument("-o", "--out", type=Path, default=None, help="CSV to write (default: print to stdout)")
    p.add_argument("--size", type=int, default=None, help="cache size the model was trained at (default: from "
                                                          "checkpoint)")
    p.add_argument("--resize", default=None, help="resize mode (default: from checkpoint or squash)")
    p.add_argument("--tta", choices=schema_choices("predict.tta"), default="none")
    p.add_argument("--device", choices=schema_choices("train.device"), default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("-j", "--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="threads decoding images in parallel (default: %(default)s)")
    p.add_argument("--on-bad-image", choices=ON_BAD_IMAGE, default="stop",
                   help="stop at the first unreadable image (default), or skip and list every one on stderr")
    p.add_argument("--bad-out", type=Path, default=None,
                   help="with --on-bad-image skip: also write the unreadable images as CSV img_name,reason")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(run=score)


def score(args: argparse.Namespace) -> None:
    from .atomic import write_csv
    from .errors import ConfigError
    from .scoring import collect_image_paths, score_images

    if args.bad_out and args.on_bad_image != "skip":
        raise ConfigError("--bad-out lists skipped images: use it with --on-bad-image skip")
    paths = collect_image_paths(args.inputs)
    result = score_images(paths, args.checkpoint, size=args.size, resize=args.resize, tta=args.tta,
                          device=args.device, batch_size=args.batch_size, workers=args.workers,
                          on_bad_image=args.on_bad_image, progress=not args.no_progress)
    for row in result.bad.itertuples():
        print(f"warning: skipped unreadable image {row.img_name}: {row.reason}", file=sys.stderr)
    if args.bad_out:
        write_csv(result.bad, args.bad_out)
    if args.out:
        write_csv(result.scores, args.out, float_format="%.6f")
        skipped = f", {len(result.bad)} unreadable skipped" if len(result.bad) else ""
        print(f"{len(result.scores)} images scored{skipped} -> {args.out}")
    else:
        print(result.scores.to_csv(index=False, float_format="%.6f"), end="")


def _check_config_parser(sub) -> None:
    p = sub.add_parser("check-config", help="validate a config file and print the effective config as YAML",
                       description="Validate a config file as the workflow does before any job runs (schema, "
                                   "local data folder, parameter budget); print the effective config, "
                                   "defaults filled in, as YAML. A bad config: one 'error:' line, exit code 2.")
    p.add_argument("config", nargs="?", default="config.yaml", help="YAML config file (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one value, e.g. --set train.lr=1.0e-3 (repeatable)")
    p.add_argument("--schema-only", action="store_true",
                   help="check the schema only (not the data folder and the parameter budget)")
    p.set_defaults(run=check_config)


def check_workflow_config(config: dict) -> None:
    """What the Snakefile checks before any job runs, beyond the schema: the local data folder,
    one model's and the whole submission's parameter budget."""
    from .layout import check_local_data
    from .models import check_param_budget
    from .submission import check_submission_budget

    check_local_data(config)
    n_params = check_param_budget(config["model"]["name"], config["model"]["max_params"])
    check_submission_budget(n_params, config["submit"]["strategy"], config["folds"]["k"],
                            config["submit"]["max_params"])


def check_config(args: argparse.Namespace) -> None:
    import yaml

    from .config import load_config, parse_override

    config = load_config(args.config, dict(parse_override(item) for item in args.set))
    if not args.schema_only:
        check_workflow_config(config)
    print(yaml.safe_dump(config, sort_keys=False), end="")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepfake-workflow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _score_parser(sub)
    _check_config_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point: a WorkflowError or OSError is one 'error:' line and exit code 2 (cli.run_main)."""
    args = build_parser().parse_args(argv)
    run_main(lambda: args.run(args))


if __name__ == "__main__":
    main()
