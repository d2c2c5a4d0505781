#!/usr/bin/env python3
"""Generate dvc.yaml from the Snakefile, so `dvc repro` runs the same stages with the same
commands, inputs and outputs as Snakemake.

It asks Snakemake for every job of a full run (a dry run with --forceall), then writes one DVC
stage per rule: a `foreach`/`matrix` stage where the rule has wildcards (folds, splits). The
differences: Snakemake passes the config sections a rule reads as --config-json, DVC passes
`--config <the config file> --keys ...` and lists every key of those sections under `params:`;
the bulky outputs that a stage rebuilds (raw images, image cache) are not stored by DVC.

DVC can only track a key that the config file spells out, so keys the file leaves out are
written into it first, at their schema defaults (its comments and order are kept).

    python scripts/write_dvc_yaml.py                                # dvc.yaml for config.yaml
    python scripts/write_dvc_yaml.py --configfile configs/cpu-real.yaml
    python scripts/write_dvc_yaml.py --check    # exit 1 if dvc.yaml (or the config file) is out of date
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from deepfake_workflow.atomic import write_text
from deepfake_workflow.config import expand_dotted_keys, load_config
from deepfake_workflow.sources import PACKAGE, PACKAGE_DIR

REPO = Path(__file__).resolve().parents[1]
CORES = 4  # thread counts baked into the DVC commands (DVC has no scheduler)
# Where dvc.yaml names the library's modules (the project's src layout): Snakemake names them
# where Python imports them from, which may lie outside the project (another checkout, a venv).
SOURCES = f"src/{PACKAGE}"

# What DVC does not store (`cache: false`), per rule: bulky outputs that the stage rebuilds from
# what DVC does track. `dvc repro` recreates them; `dvc push` never uploads them. README, "What DVC
# stores", says why for every output.
NOT_STORED: dict[str, Callable[[str], bool]] = {
    "fetch_data": lambda out: not out.endswith(".json"),  # the raw images: demo-made or downloaded
    "build_cache": lambda out: out.endswith("/images.npy"),  # the image array (232 GB at full size)
}
# The training histories' columns drawn by `dvc plots show`, one line per fold.
HISTORY_PLOTS = {"val_auc": "Validation AUC by epoch", "train_loss": "Training loss by epoch",
                 "val_loss": "Validation loss by epoch"}


def dry_run_jobs(workdir: Path, configfile: str) -> list[dict]:
    """Every job of a full run, parsed from `snakemake -n -p --forceall` output."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", configfile, "--cores", str(CORES), "--resources", "gpu=1",
           "--forceall", "-n", "-p", "--workflow-profile", "none", "--nolock"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"snakemake dry run failed:\n{proc.stdout}\n{proc.stderr}")
    jobs, job = [], None
    for line in (proc.stdout + "\n" + proc.stderr).splitlines():
        head = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if head:
            job = {"rule": head.group(1), "input": [], "output": [], "wildcards": {}}
            jobs.append(job)
            continue
        if job is None:
            continue
        field = re.match(r"^\s+(input|output|wildcards): (.*)$", line)
        if field:
            key, value = field.groups()
            if key == "wildcards":
                job[key] = dict(item.split("=", 1) for item in value.split(", "))
            else:
                job[key] = value.split(", ")
        elif line.startswith("Shell command: "):
            job["shell"] = line[len("Shell command: "):]
    return [j for j in jobs if j["rule"] != "all"]


def dvc_path(path: str) -> str:
    """A job's input as dvc.yaml names it: the library's modules under src/, the rest as they are."""
    if Path(path).is_absolute() and Path(path).is_relative_to(PACKAGE_DIR):
        return f"{SOURCES}/{Path(path).relative_to(PACKAGE_DIR).as_posix()}"
    return path


def stage_command(shell: str) -> list[str]:
    """The stage program's own command: what comes before the pipe to the log (DVC keeps no log)."""
    tokens = shlex.split(shell)
    if "|" in tokens:
        tokens = tokens[:tokens.index("|")]
    return [t for t in tokens if t != "2>&1"]


def to_dvc_command(shell: str, configfile: str = "config.yaml") -> tuple[str, list[str]]:
    """Swap --config-json for --config <configfile> --keys <the same keys>; return (cmd, params):
    params are every key under the passed ones, as the rule passes them (schema defaults included)."""
    tokens = stage_command(shell)
    if "--config-json" not in tokens:  # a stage that reads no config
        return shlex.join(tokens), []
    i = tokens.index("--config-json")
    passed = json.loads(tokens[i + 1])  # {"predict": {...}, "train.device": "auto"}: the keys the rule passes
    tokens[i:i + 2] = ["--config", configfile, "--keys", ",".join(sorted(passed))]
    return shlex.join(tokens), leaf_keys(expand_dotted_keys(passed))


def leaf_keys(tree: dict, prefix: str = "") -> list[str]:
    """Dotted leaf keys of a config tree, e.g. ["train.augment.hflip", "train.lr"].

    Leaves, not sections: DVC's run-cache hash leaves out every key named `size` at any depth, so
    a whole `cache` section as one param would let a cache.size change restore a stale output.
    """
    keys = []
    for key, value in sorted(tree.items()):
        if isinstance(value, dict) and value:
            keys += leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def missing_keys(config: dict, raw: dict, prefix: str = "") -> dict:
    """The part of the effective `config` that the file (`raw`) does not spell out."""
    missing = {}
    for key, value in config.items():
        if isinstance(value, dict) and value and isinstance(raw.get(key), dict):
            sub = missing_keys(value, raw[key], f"{prefix}{key}.")
            if sub:
                missing[key] = sub
        elif key not in raw:
            missing[key] = value
    return missing


def add_keys(path: Path, missing: dict) -> None:
    """Write `missing` into the YAML file, keeping its comments, order and formatting (ruamel)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = rt.load(path.read_text(encoding="utf-8")) or CommentedMap()

    def plain(value):
        if isinstance(value, dict):
            return CommentedMap((k, plain(v)) for k, v in value.items())
        if isinstance(value, list):
            seq = CommentedSeq(plain(v) for v in value)
            if all(not isinstance(v, (dict, list)) for v in value):
                seq.fa.set_flow_style()  # [0.05, 0.4], as the hand-written keys are
            return seq
        return value

    def last_leaf(node):  # the mapping and key of the file's last line under `node`
        key = list(node)[-1]
        return last_leaf(node[key]) if isinstance(node[key], CommentedMap) and node[key] else (node, key)

    def merge(node, values):
        old_end = last_leaf(node) if node else None
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(node.get(key), dict):
                merge(node[key], value)
            else:
                node[key] = plain(value)
        if old_end and last_leaf(node) != old_end:
            keep_blank_lines_last(*old_end, *last_leaf(node))

    def keep_blank_lines_last(owner, key, new_owner, new_key):
        """ruamel keeps the blank lines after a section with its last key: move them below the added keys."""
        token = (owner.ca.items.get(key) or [None] * 4)[2]
        if token is None or not token.value.endswith("\n\n"):
            return
        line, _, blank = token.value.partition("\n")  # "# comment\n\n": the line's end, then blank lines
        moved = copy.copy(token)
        token.value, moved.value = line + "\n", "\n" + blank
        new_owner.ca.items.setdefault(new_key, [None] * 4)[2] = moved

    merge(doc, missing)
    out = io.StringIO()
    rt.dump(doc, out)
    write_text(path, out.getvalue())  # atomic: a kill never leaves the user's config half written


def template(text: str, wildcards: dict) -> str:
    """Replace wildcard values by ${item.<name>} where they stand as path or argument parts."""
    for name, value in wildcards.items():
        text = re.sub(rf"(?<=[/_ ]{name}){re.escape(value)}(?![0-9A-Za-z])", f"${{item.{name}}}", text)
        text = re.sub(rf"(?<=[/_ ]){re.escape(value)}(?=\.[a-z]+|/|$| )", f"${{item.{name}}}", text)
        text = re.sub(rf"(?<=--{name} ){re.escape(value)}(?![0-9A-Za-z])", f"${{item.{name}}}", text)
    return text


def expand(text: str, wildcards: dict) -> str:
    for name, value in wildcards.items():
        text = text.replace(f"${{item.{name}}}", value)
    return text


def job_deps(job: dict) -> list[str]:
    return sorted({dvc_path(p) for p in job["input"]})


def out_entry(rule: str, out: str):
    """One `outs:` entry: the path, or {path: {cache: false}} for what DVC does not store."""
    return {out: {"cache": False}} if NOT_STORED.get(rule, lambda _: False)(out) else out


def stage_for(jobs: list[dict], configfile: str) -> dict | None:
    """One DVC stage (plain, foreach or matrix) for all jobs of a rule, or None if not templatable."""
    first = jobs[0]
    rule = first["rule"]
    cmd, params = to_dvc_command(" " + first["shell"], configfile)
    body = {"cmd": cmd.strip(), "deps": job_deps(first), "params": [{configfile: params}], "outs": first["output"]}
    if not params:
        del body["params"]
    if first["wildcards"]:
        body["cmd"] = template(" " + body["cmd"], first["wildcards"]).strip()
        body["deps"] = sorted(template(" " + d, first["wildcards"]).strip() for d in body["deps"])
        body["outs"] = [template(" " + o, first["wildcards"]).strip() for o in body["outs"]]
        for job in jobs:  # every job must come back exactly from the template
            cmd_j, _ = to_dvc_command(" " + job["shell"], configfile)
            if (expand(body["cmd"], job["wildcards"]) != cmd_j.strip()
                    or sorted(expand(d, job["wildcards"]) for d in body["deps"]) != job_deps(job)
                    or [expand(o, job["wildcards"]) for o in body["outs"]] != job["output"]):
                return None
    body["outs"] = [out_entry(rule, o) for o in body["outs"]]
    if not first["wildcards"]:
        return body
    names = list(first["wildcards"])
    values = {n: sorted({j["wildcards"][n] for j in jobs}, key=natural) for n in names}
    if len(names) == 1:
        return {"foreach": [{names[0]: v} for v in values[names[0]]], "do": body}
    return {"matrix": values, **body}


def pipeline_order(jobs: list[dict]) -> list[str]:
    """Rule names in pipeline order (a rule after every rule whose output it reads), ties by
    name: a stable, readable file although the dry run lists jobs in no fixed order."""
    producer = {out: job["rule"] for job in jobs for out in job["output"]}
    needs = {job["rule"]: set() for job in jobs}
    for job in jobs:
        needs[job["rule"]] |= {producer[f] for f in job["input"] if f in producer} - {job["rule"]}
    ordered: list[str] = []
    while len(ordered) < len(needs):
        ready = sorted(r for r in needs if r not in ordered and needs[r] <= set(ordered))
        if not ready:
            raise SystemExit(f"rules depend on each other in a cycle: {sorted(set(needs) - set(ordered))}")
        ordered.append(ready[0])
    return ordered


def natural(value: str):
    return (0, int(value)) if value.isdigit() else (1, value)


def script_name(shell: str) -> str:
    return re.search(r"scripts/(\w+\.py)", shell).group(1)


def project_relative(configfile: str | Path, workdir: Path) -> str:
    """The config file as dvc.yaml names it: relative to the project, with forward slashes."""
    path = Path(configfile)
    full = (path if path.is_absolute() else workdir / path).resolve()
    if not full.is_relative_to(workdir):
        raise SystemExit(f"{configfile}: the config file must lie inside the project ({workdir}): DVC tracks "
                         f"params only in files of the repository")
    return full.relative_to(workdir).as_posix()


def config_gaps(configfile: str, workdir: Path) -> dict:
    """The keys of the effective config that the config file does not spell out (DVC cannot track them)."""
    path = workdir / configfile
    raw = expand_dotted_keys(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return missing_keys(load_config(path), raw)


def build_dvc_yaml(configfile: str, workdir: Path = REPO) -> dict:
    jobs = dry_run_jobs(workdir, configfile)
    by_rule: dict[str, list[dict]] = {}
    for job in jobs:
        by_rule.setdefault(job["rule"], []).append(job)
    stages = {}
    for rule in pipeline_order(jobs):
        rule_jobs = by_rule[rule]
        rule_jobs.sort(key=lambda j: [natural(v) for v in j["wildcards"].values()])
        stage = stage_for(rule_jobs, configfile)
        if stage is not None:
            stages[rule] = stage
            continue
        for job in rule_jobs:  # cannot template: one plain stage per job
            suffix = "_".join(job["wildcards"].values())
            stages[f"{rule}_{suffix}"] = stage_for([{**job, "wildcards": {}}], configfile)
    return {"stages": stages, **metrics_and_plots(by_rule)}


def metrics_and_plots(by_rule: dict[str, list[dict]]) -> dict:
    """DVC's metrics and plots: the report's headline metrics (a handful of numbers; metrics.json
    holds the rest), every fold's history (each file named: DVC expands no wildcards there) and
    the report's plots. Paths from the jobs' outputs, so they follow results_dir and folds.k."""
    report = by_rule["report"][0]["output"]
    histories = sorted((o for job in by_rule["train"] for o in job["output"] if o.endswith("/history.csv")),
                       key=lambda o: [natural(p) for p in re.split(r"(\d+)", o)])
    return {
        "metrics": [o for o in report if o.endswith("/headline.json")],
        "plots": [
            *[{column: {"title": title, "x": "epoch", "y": {h: column for h in histories}}}
              for column, title in HISTORY_PLOTS.items()],
            *[f"{o}/" for o in report if o.endswith("/plots")],
        ],
    }


HEADER = """\
# GENERATED by scripts/write_dvc_yaml.py from the Snakefile and {configfile}: do not edit.
# Regenerate after changing the rules, folds.k, or the config file:
#   python scripts/write_dvc_yaml.py{option}   (tests fail while it is out of date)
# The same stage programs, arguments, inputs and outputs as `snakemake`; Snakemake passes each
# rule's config sections as --config-json, DVC passes {configfile} and tracks every key of them.
# Inputs include each stage's program and the library modules it imports: editing one re-runs it.
"""


def render(data: dict, configfile: str) -> str:
    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s))
    option = "" if configfile == "config.yaml" else f" --configfile {configfile}"
    return (HEADER.format(configfile=configfile, option=option)
            + yaml.dump(data, Dumper=Dumper, sort_keys=False, width=200))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default="config.yaml", help="the config file DVC passes and tracks "
                                                                     "(inside the project; default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=REPO, help="project folder (holds the config and dvc.yaml)")
    parser.add_argument("--out", default=None, help="default: <workdir>/dvc.yaml")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    configfile = project_relative(args.configfile, workdir)
    gaps = config_gaps(configfile, workdir)
    if gaps and args.check:
        print(f"{configfile} leaves out keys that DVC must track ({', '.join(leaf_keys(gaps))}): run "
              f"python scripts/write_dvc_yaml.py{'' if configfile == 'config.yaml' else ' --configfile ' + configfile}"
              f" to write them in at their schema defaults", file=sys.stderr)
        sys.exit(1)
    if gaps:
        add_keys(workdir / configfile, gaps)
        print(f"{configfile}: wrote {len(leaf_keys(gaps))} keys it left out at their schema defaults "
              f"(DVC tracks only keys the file spells out): {', '.join(leaf_keys(gaps))}")
        if config_gaps(configfile, workdir):
            raise SystemExit(f"{configfile}: could not write every key in (still missing: "
                             f"{', '.join(leaf_keys(config_gaps(configfile, workdir)))})")
    text = render(build_dvc_yaml(configfile, workdir), configfile)
    out = Path(args.out) if args.out else workdir / "dvc.yaml"
    if args.check:
        current = out.read_text(encoding="utf-8") if out.exists() else ""
        if current != text:
            print(f"{out} is out of date: run python scripts/write_dvc_yaml.py", file=sys.stderr)
            sys.exit(1)
        print(f"{out} is up to date")
        return
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({len(text.splitlines())} lines)")


if __name__ == "__main__":
    main()
