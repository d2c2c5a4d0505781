"""Shared plumbing for the stage programs in scripts/: config arguments, log format and clean failures."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from .config import deep_merge, expand_dotted_keys, load_config, parse_override, validate_config
from .errors import ConfigError, WorkflowError


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """--config FILE (dvc repro, users) or --config-json (Snakemake passes its params)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", help="YAML config file (validated; defaults filled in)")
    group.add_argument("--config-json", help="config sections as JSON (what the Snakefile passes)")
    parser.add_argument("--keys", default=None, metavar="KEY,KEY",
                        help="with --config: the config keys this stage may read, e.g. predict,train.device "
                             "(dvc.yaml passes the keys the Snakefile passes as JSON)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set train.lr=1.0e-3 (repeatable)")


def add_compute_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of the stages that run a model: GPU lock folder, CPU threads, progress bars."""
    parser.add_argument("--gpu-locks", type=Path, default=None,
                        help="folder of the lock files that give each job its own GPU (default: one per machine "
                             "and user, or $DEEPFAKE_WORKFLOW_GPU_LOCKS)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads the scheduler gave the job")
    parser.add_argument("--no-progress", action="store_true")


def config_from_args(args: argparse.Namespace) -> dict:
    """The validated config a stage may read: the keys its rule passed, nothing else.

    A section name ("predict") passes the whole section, schema defaults included; a dotted key
    ("train.device") only that value. Reading any other key fails the same way under both
    engines (Snakemake passes the keys as --config-json, dvc.yaml the whole file plus --keys)
    instead of silently taking the schema default.
    """
    overrides = dict(parse_override(item) for item in args.set)
    if args.config_json:
        raw = json.loads(args.config_json)
        if not isinstance(raw, dict):
            raise ConfigError("--config-json: expected a JSON object of config keys")
        merged = deep_merge(expand_dotted_keys(raw), expand_dotted_keys(overrides))
        return PassedConfig.restrict(validate_config(merged), _key_tree(raw))
    config = load_config(args.config, overrides)
    if args.keys:
        return PassedConfig.restrict(config, _key_tree(args.keys.split(",")))
    return config


def _key_tree(keys) -> dict:
    """{"train.device", "predict"} -> {"train": {"device": True}, "predict": True} (True: all of it)."""
    tree: dict = {}
    for key in sorted(k.strip() for k in keys):  # "train" sorts before "train.device": the whole wins
        node = tree
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if node is True:
                break
        else:
            node[last] = True
    return tree


class PassedConfig(dict):
    """A config mapping that names the key when a stage reads one its rule did not pass it."""

    path = ""

    @classmethod
    def restrict(cls, config: dict, tree: dict, path: str = "") -> PassedConfig:
        out = cls()
        out.path = path
        for key, sub in tree.items():
            if key not in config:
                continue
            value = config[key]
            if sub is not True and isinstance(value, dict):
                value = cls.restrict(value, sub, f"{path}{key}.")
            dict.__setitem__(out, key, value)
        return out

    def __missing__(self, key):
        raise ConfigError(f"config key '{self.path}{key}' was not passed to this stage: add it to the rule's "
                          f"sections(...) in rules/ (and regenerate dvc.yaml)")


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
def gpu_slot(lock_dir, device: str, count: int = 1):
    """`count` GPUs for this job on a multi-GPU machine (a no-op on CPU, or when the cluster chose);
    processes the job starts inherit them through CUDA_VISIBLE_DEVICES.

    Without `lock_dir` the machine-wide folder (devices.gpu_lock_dir) is used.
    """
    if device == "cpu":
        yield None
        return
    from .devices import acquire_gpus, gpu_lock_dir

    with acquire_gpus(lock_dir or gpu_lock_dir(), count) as indices:
        yield indices
