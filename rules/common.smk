# Config validation and path helpers shared by every rule file. The logic lives in the
# deepfake_workflow library; this file only turns the validated config into paths and params.
#
# The Snakefile runs in Snakemake's own module namespace: import library *modules* under
# aliases, never names such as WorkflowError that Snakemake itself uses (a shadowed
# WorkflowError turns Snakemake's clean failure message into a traceback).
import json as _json
import os as _os
from pathlib import Path as _Path

import deepfake_workflow.command as dw_command
import deepfake_workflow.config as dw_config
import deepfake_workflow.layout as dw_layout
import deepfake_workflow.sources as dw_sources

# The config with command-line values on top (Snakemake hands `--config` keys over before the
# config file's sections; expand_dotted_keys lets `section__key` win whatever the order),
# checked against the schema, the data folder and the parameter budget before any job runs
# (the same checks as `deepfake-workflow check-config`).
_valid = dw_config.validate_config(config)
# Only in the process the user started: a cluster job's own Snakemake processes (two per SLURM
# job) parse this file again, and the budget check builds the model (torch, timm: seconds of CPU).
if workflow.is_main_process:
    dw_command.check_workflow_config(_valid)
config.clear()
config.update(_valid)

# envs/workflow.post-deploy.sh installs the project from here into the rules' conda environment
# (`--sdm conda`): Snakemake runs it from a copy under .snakemake/conda/, which cannot say where
# the workflow is.
_os.environ.update(DEEPFAKE_WORKFLOW_ROOT=str(workflow.basedir))  # set, not read: no envvars: needed

R = config["results_dir"]
LOCAL = config["data"]["source"] == "local"
RAW_ROOT = str(dw_layout.data_root(config))
# With no phase-2 test set the validation split is scored (as the phase-1 leaderboard did).
TEST_SOURCE = dw_layout.scored_split(config)
SPLITS = dw_layout.used_splits(config)
FOLDS = list(range(config["folds"]["k"]))


def sections(*keys):
    """The config keys a rule uses, as one JSON argument for its script.

    A section name passes the whole section, a dotted key ("train.device") only that value: the
    stage can read nothing else (dvc.yaml passes the same keys as --keys). Passed through
    `params:` so a change re-runs exactly the rules that read it.
    """
    picked = {}
    for key in keys:
        node = config
        for part in key.split("."):
            node = node[part]
        picked[key] = node
    return _json.dumps(picked, sort_keys=True)


def folder_of(ref):
    """A params function giving the folder of a named input or output, e.g. "output.images"."""
    kind, name = ref.split(".")

    def get(wildcards, input, output):
        return str(_Path(getattr({"input": input, "output": output}[kind], name)).parent)

    return get


def code(program):
    """The stage program and the library modules it imports (transitively), as inputs: editing one
    re-runs the rules that run it, and what reads their outputs (dvc.yaml lists the same files as
    deps). Modules are named where Python imports them from, relative to the working directory
    when they lie inside it."""
    script = f"scripts/{program}.py"
    here = _Path.cwd()
    return [script] + [
        str(m.relative_to(here)) if m.is_relative_to(here) else str(m)
        for m in dw_sources.imported_modules(_Path(workflow.basedir, script))
    ]


def label_files(wildcards=None):
    """A local copy's label files: inputs, so that editing one re-runs what reads it."""
    return [dw_layout.split_paths(config, s).labels for s in SPLITS] if LOCAL else []


def split_source(wildcards):
    """What one split's manifest is made from: its label file, or the generated raw data."""
    if LOCAL:
        return dw_layout.split_paths(config, wildcards.split).labels
    return rules.fetch_data.output.raw


def split_manifest(split):
    """The manifest of one split (the check_split output), for the stages that read that split."""
    return one(rules.check_split.output[0], split=split)


def one(pattern, **wildcards):
    """The single path of a rule's output pattern for these wildcards."""
    return expand(pattern, **wildcards)[0]


def cached(split):
    """The cache folder that the predictions of `split` read (test may read val)."""
    return dw_layout.cache_split(split, TEST_SOURCE)
