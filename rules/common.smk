# Config validation and path helpers shared by every rule file. The logic lives in the
# deepfake_workflow library; this file only turns the validated config into paths and params.
import json
import sys
from pathlib import Path


from deepfake_workflow.config import validate_config
from deepfake_workflow.errors import WorkflowError
from deepfake_workflow.layout import data_root, scored_split, split_paths

try:
    _validated = validate_config(config)
except WorkflowError as _exc:
    raise WorkflowError(str(_exc)) from None
config.clear()
config.update(_validated)

R = config["results_dir"]
MANIFEST = f"{R}/data/dataset.json"
RAW_ROOT = str(data_root(config))
# With no phase-2 test set the validation split is scored (as the phase-1 leaderboard did),
# so the "test" predictions read the validation cache.
TEST_SOURCE = scored_split(config)
CACHE_SPLITS = ["train", "val"] + (["test"] if TEST_SOURCE == "test" else [])
FOLDS = list(range(config["folds"]["k"]))
FOLDS_CSV = f"{R}/folds.csv"
SUBMISSION = f"{R}/submission.csv"
REPORT_DIR = f"{R}/reports"
REPORT_METRICS = f"{REPORT_DIR}/metrics.json"
REPORT_HTML = f"{REPORT_DIR}/report.html"
CACHE_FILES = ["images.npy", "index.csv", "bad_images.csv", "cache_info.json"]
MODEL_FILES = ["best.pt", "history.csv", "oof.csv", "metrics.json"]


def sections(*keys):
    """The config sections a rule uses, as one JSON argument for its script.

    Passed through `params:` so a change re-runs exactly the rules that read it.
    """
    picked = {}
    for key in keys:
        node, out = config, picked
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
            out = out.setdefault(part, {})
        out[parts[-1]] = node[parts[-1]]
    return json.dumps(picked, sort_keys=True)


def folder_of(ref):
    """A params function giving the folder of a named input or output, e.g. "output.images"."""
    kind, name = ref.split(".")

    def get(wildcards, input, output):
        return str(Path(getattr({"input": input, "output": output}[kind], name)).parent)

    return get


def cache_dir(split):
    return f"{R}/cache/{split}"


def cache_outputs(split):
    return [f"{cache_dir(split)}/{name}" for name in CACHE_FILES]


def model_dir(fold):
    return f"{R}/models/fold{fold}"


def cache_split_for(split):
    return "val" if split == "test" and TEST_SOURCE == "val" else split


def fetch_data_inputs(wildcards):
    # A local copy is read in place: its label files are inputs, so editing them re-runs
    # the stage (and, through the manifest, what depends on it).
    if config["data"]["source"] != "local":
        return []
    splits = ["train", "val"] + (["test"] if TEST_SOURCE == "test" else [])
    return [split_paths(config, s).labels for s in splits]


def predict_cache(wildcards):
    split = cache_split_for(wildcards.split)
    return {"images": f"{R}/cache/{split}/images.npy", "index": f"{R}/cache/{split}/index.csv"}


def _check_param_budgets():
    """Fail before any job starts if one model or the whole submission is over budget."""
    from deepfake_workflow.models import check_param_budget
    from deepfake_workflow.submission import check_submission_budget

    n_params = check_param_budget(config["model"]["name"], config["model"]["max_params"])
    check_submission_budget(n_params, config["submit"]["strategy"], config["folds"]["k"],
                            config["submit"]["max_params"])


try:
    _check_param_budgets()
except WorkflowError as _exc:
    raise WorkflowError(str(_exc)) from None
