"""Shared plumbing for the stage programs in scripts/: config arguments, log format and clean failures."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Callable

from .config import load_config, parse_override, validate_config
from .errors import WorkflowError


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """--config FILE (dvc repro, users) or --config-json (Snakemake passes its params)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", help="YAML config file (validated; defaults filled in)")
    group.add_argument("--config-json", help="config sections as JSON (what the Snakefile passes)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set train.lr=1.0e-3 (repeatable)")


def add_compute_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of the stages that run a model: GPU lock folder, CPU threads, progress bars."""
    parser.add_argument("--gpu-locks", type=Path, default=None, help="lock files that give each job its own GPU")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads the scheduler gave the job")
    parser.add_argument("--no-progress", action="store_true")


def config_from_args(args: argparse.Namespace) -> dict:
    overrides = dict(parse_override(item) for item in args.set)
    if args.config_json:
        raw = json.loads(args.config_json)
        if overrides:
            from .config import deep_merge, expand_dotted_keys

            raw = deep_merge(expand_dotted_keys(raw), expand_dotted_keys(overrides))
        return validate_config(raw)
    return load_config(args.config, overrides)


class _LevelPrefixFormatter(logging.Formatter):
    """Progress lines as they are; 'warning: ...' (the level) for warnings and worse."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def configure_logging() -> None:
    """The library's log lines (progress: INFO) as plain lines on stderr, where Snakemake's
    `2>&1 | tee log` keeps them; other libraries stay at WARNING. Idempotent."""
    root = logging.getLogger()
    if not any(h.get_name() == __package__ for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(__package__)
        handler.setFormatter(_LevelPrefixFormatter("%(message)s"))
        root.addHandler(handler)
    logging.getLogger(__package__).setLevel(logging.INFO)


def run_main(main: Callable[[], None]) -> None:
    """Run a stage; a WorkflowError becomes one clear line on stderr and exit code 2."""
    configure_logging()
    try:
        main()
    except WorkflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        # Disk full, unwritable folder, file too large: the message names the path. Outputs are
        # written atomically, so nothing that looks finished was left behind.
        print(f"error: cannot read or write a file: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def set_threads(n: int | None) -> None:
    """Use the threads the scheduler gave the job (Snakemake `threads:`), not every core."""
    if n:
        import torch

        torch.set_num_threads(max(1, n))


@contextlib.contextmanager
def gpu_slot(lock_dir, device: str):
    """One GPU for this job on a multi-GPU machine (a no-op on CPU, or when the cluster chose)."""
    if lock_dir is None or device == "cpu":
        yield None
        return
    from .devices import acquire_gpu

    with acquire_gpu(lock_dir) as index:
        yield index
