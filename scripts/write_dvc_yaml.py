#!/usr/bin/env python3
"""Generate dvc.yaml from the Snakefile, so `dvc repro` runs the same stages with the same
commands, inputs and outputs as Snakemake.

It asks Snakemake for every job of a full run (a dry run with --forceall), then writes one DVC
stage per rule: a `foreach`/`matrix` stage where the rule has wildcards (folds, splits). The
one difference: Snakemake passes the config sections a rule reads as --config-json, DVC passes
`--config config.yaml` and lists the same keys under `params:`.

    python scripts/write_dvc_yaml.py            # rewrite dvc.yaml for config.yaml
    python scripts/write_dvc_yaml.py --check    # exit 1 if dvc.yaml is out of date
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from deepfake_workflow.config import expand_dotted_keys, load_config

REPO = Path(__file__).resolve().parents[1]
CORES = 4  # thread counts baked into the DVC commands (DVC has no scheduler)


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


def stage_command(shell: str) -> list[str]:
    """The stage program's own command: what comes before the pipe to the log (DVC keeps no log)."""
    tokens = shlex.split(shell)
    if "|" in tokens:
        tokens = tokens[:tokens.index("|")]
    return [t for t in tokens if t != "2>&1"]


def to_dvc_command(shell: str, full_config: dict, raw_config: dict | None = None) -> tuple[str, list[str]]:
    """Swap --config-json for --config config.yaml --keys <the same keys>; return (cmd, params)."""
    tokens = stage_command(shell)
    if "--config-json" not in tokens:  # a stage that reads no config
        return shlex.join(tokens), []
    i = tokens.index("--config-json")
    passed = json.loads(tokens[i + 1])  # {"predict": {...}, "train.device": "auto"}: the keys the rule passes
    tokens[i:i + 2] = ["--config", "config.yaml", "--keys", ",".join(sorted(passed))]
    sections = expand_dotted_keys(passed)
    return shlex.join(tokens), param_keys(sections, full_config, full_config if raw_config is None else raw_config)


def param_keys(sections: dict, full: dict, raw: dict, prefix: str = "") -> list[str]:
    """Dotted leaf keys naming exactly what the rule reads, as written in the config file.

    Leaves, not sections: DVC's run-cache ignores dict-valued params (it would restore a
    stale output after a change). Only keys the file contains: DVC refuses to track a
    missing one; those take the schema default (add the key, then regenerate).
    """
    keys = []
    for key, value in sorted(sections.items()):
        if key not in raw:
            continue
        if isinstance(value, dict) and isinstance(raw[key], dict):
            keys += param_keys(value, full[key], raw[key], f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


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


def stage_for(jobs: list[dict], full_config: dict, raw_config: dict) -> dict | None:
    """One DVC stage (plain, foreach or matrix) for all jobs of a rule, or None if not templatable."""
    first = jobs[0]
    cmd, params = to_dvc_command(" " + first["shell"], full_config, raw_config)
    body = {
        "cmd": cmd.strip(),
        "deps": sorted(set(first["input"]) | {f"scripts/{script_name(first['shell'])}"}),
        "params": [{"config.yaml": params}],
        "outs": first["output"],
    }
    if not params:
        del body["params"]
    if not first["wildcards"]:
        return body
    names = list(first["wildcards"])
    body = {k: (template(" " + v, first["wildcards"]).strip() if k == "cmd" else v) for k, v in body.items()}
    body["deps"] = sorted(template(" " + d, first["wildcards"]).strip() for d in body["deps"])
    body["outs"] = [template(" " + o, first["wildcards"]).strip() for o in body["outs"]]
    for job in jobs:  # every job must come back exactly from the template
        cmd_j, _ = to_dvc_command(" " + job["shell"], full_config)
        if (expand(body["cmd"], job["wildcards"]) != cmd_j.strip()
                or sorted(expand(d, job["wildcards"]) for d in body["deps"])
                != sorted(set(job["input"]) | {f"scripts/{script_name(job['shell'])}"})
                or [expand(o, job["wildcards"]) for o in body["outs"]] != job["output"]):
            return None
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


def build_dvc_yaml(configfile: str, workdir: Path = REPO) -> dict:
    full = load_config(workdir / configfile)
    raw = expand_dotted_keys(yaml.safe_load((workdir / configfile).read_text(encoding="utf-8")) or {})
    jobs = dry_run_jobs(workdir, configfile)
    by_rule: dict[str, list[dict]] = {}
    for job in jobs:
        by_rule.setdefault(job["rule"], []).append(job)
    stages = {}
    ordered = pipeline_order(jobs)
    for rule in ordered:
        rule_jobs = by_rule[rule]
        rule_jobs.sort(key=lambda j: [natural(v) for v in j["wildcards"].values()])
        stage = stage_for(rule_jobs, full, raw)
        if stage is not None:
            stages[rule] = stage
            continue
        for job in rule_jobs:  # cannot template: one plain stage per job
            suffix = "_".join(job["wildcards"].values())
            stages[f"{rule}_{suffix}"] = stage_for([{**job, "wildcards": {}}], full, raw)
    return {"stages": stages, **metrics_and_plots(by_rule)}


def metrics_and_plots(by_rule: dict[str, list[dict]]) -> dict:
    """DVC's metrics and plots: the report's metrics.json and plots folder, every fold's history
    (paths from the jobs' outputs, so they follow results_dir)."""
    report = by_rule["report"][0]["output"]
    histories = sorted(o for job in by_rule["train"] for o in job["output"] if o.endswith("/history.csv"))
    pattern = re.sub(r"fold\d+/", "fold*/", histories[0])
    return {
        "metrics": [o for o in report if o.endswith("/metrics.json")],
        "plots": [
            {pattern: {"x": "epoch", "y": ["val_auc", "train_loss", "val_loss"]}},
            *[f"{o}/" for o in report if o.endswith("/plots")],
        ],
    }


HEADER = """\
# GENERATED by scripts/write_dvc_yaml.py from the Snakefile and {configfile}: do not edit.
# Regenerate after changing the rules, folds.k, or the keys written in the config file:
#   python scripts/write_dvc_yaml.py   (tests fail while it is out of date)
# The same stage programs, arguments, inputs and outputs as `snakemake`; Snakemake passes each
# rule's config sections as --config-json, DVC passes config.yaml and tracks the same keys.
"""


def render(data: dict, configfile: str) -> str:
    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s))
    return HEADER.format(configfile=configfile) + yaml.dump(data, Dumper=Dumper, sort_keys=False, width=200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default="config.yaml")
    parser.add_argument("--workdir", type=Path, default=REPO, help="project folder (holds the config and dvc.yaml)")
    parser.add_argument("--out", default=None, help="default: <workdir>/dvc.yaml")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    args = parser.parse_args()
    text = render(build_dvc_yaml(args.configfile, args.workdir.resolve()), args.configfile)
    out = Path(args.out) if args.out else args.workdir / "dvc.yaml"
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
