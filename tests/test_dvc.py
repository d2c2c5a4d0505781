"""DVC: `dvc repro` runs the same pipeline as Snakemake, versions its outputs, and both engines agree.

Real git, real dvc, a local-directory remote, the tiny demo config.
"""
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import BIN, REPO, TINY_CONFIG, jobs_run, snakemake, write_config

from deepfake_workflow.config import load_config

PROJECT_FILES = ["Snakefile", "rules", "scripts", "src", "report", "envs", ".dvcignore"]
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def sh(cwd, *cmd, check=True, timeout=900):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def dvc(cwd, *args, **kw):
    return sh(cwd, str(BIN / "dvc"), *args, **kw)


def rule_of(stage: str) -> str:
    """The Snakemake rule of a DVC stage name: 'train@0' and 'check_split_val' are 'train' and
    'check_split' (a rule whose jobs cannot share one template gets one stage per job)."""
    name = stage.split("@")[0]
    return "check_split" if name.startswith("check_split_") else name


def stages_run(proc) -> set[str]:
    """Rules whose stages `dvc repro` ran, from its 'Running stage' lines."""
    names = set()
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("Running stage '"):
            names.add(rule_of(line.split("'")[1]))
    return names


def make_project(path, config=TINY_CONFIG):
    """A git + DVC project holding the workflow, a config, and dvc.yaml generated for that config."""
    path.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, path / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, path / name)
    write_config(path, config)
    # DVC git-ignores what it stores; the outputs it does not store (cache: false) are ignored here
    # as the repository's .gitignore ignores all of results/
    (path / ".gitignore").write_text("/results/state/\n/results/logs/\n/results/benchmarks/\n/.snakemake/\n"
                                     "/results/data/raw/\n/results/cache/*/images.npy\n")
    sh(path, sys.executable, str(REPO / "scripts/write_dvc_yaml.py"), "--workdir", str(path))
    sh(path, "git", "init", "-q")
    dvc(path, "init", "-q")
    dvc(path, "config", "core.autostage", "true")
    sh(path, "git", "add", "-A")
    sh(path, "git", "commit", "-qm", "project")
    return path


@pytest.fixture(scope="module")
def repro_project(tmp_path_factory):
    """A project after one full `dvc repro` (shared by the tests that only read it)."""
    project = make_project(tmp_path_factory.mktemp("dvc") / "project")
    first = dvc(project, "repro")
    return project, first


def test_generated_dvc_yaml_is_current():
    sh(REPO, sys.executable, "scripts/write_dvc_yaml.py", "--check")


def test_dvc_yaml_matches_the_snakefile():
    """Same stages, commands, inputs and outputs: every Snakemake job has its DVC stage. Each stage
    tracks every key of the config sections its rule reads, schema defaults included, and DVC
    stores every output but the raw images and the image arrays."""
    gen = generator()
    jobs = gen.dry_run_jobs(REPO, "config.yaml")
    from dvc.repo import Repo

    from deepfake_workflow.config import validate_config

    stages = {s.addressing: s for s in Repo(str(REPO)).index.stages}
    defaults = validate_config({})
    assert {j["rule"] for j in jobs} == {rule_of(name) for name in stages}
    for job in jobs:
        cmd, _ = gen.to_dvc_command(job["shell"])
        match = [s for s in stages.values() if s.cmd == cmd]
        assert len(match) == 1, f"no DVC stage runs: {cmd}"
        stage = match[0]
        assert sorted(str(o.def_path) for o in stage.outs) == sorted(job["output"])
        deps = {str(d.def_path) for d in stage.deps if not str(d.def_path).endswith("config.yaml")}
        assert deps == {gen.dvc_path(i) for i in job["input"]}
        assert f"scripts/{gen.script_name(cmd)}" in deps and "src/deepfake_workflow/cli.py" in deps
        tracked = {key for d in stage.deps if str(d.def_path) == "config.yaml" for key in d.params}
        keys = cmd.split("--keys ")[1].split()[0].split(",") if "--keys" in cmd else []
        assert tracked == set(leaves_of(defaults, keys)), stage.addressing  # as the schema defines them
        stored = {str(o.def_path): o.use_cache for o in stage.outs}
        for path, use_cache in stored.items():
            assert use_cache == (not (path.endswith("/images.npy") or path.endswith("/data/raw"))), path
    assert "train.weight_decay" in leaves_of(defaults, ["train"])


def generator():
    spec = importlib.util.spec_from_file_location("write_dvc_yaml", REPO / "scripts/write_dvc_yaml.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return gen


def leaves_of(config: dict, keys: list[str]) -> list[str]:
    """Every leaf under the dotted keys, e.g. ["predict", "train.device"] -> predict.tta, ..."""
    out = []
    for key in keys:
        node = config
        for part in key.split("."):
            node = node[part]
        stack = [(key, node)]
        while stack:
            name, value = stack.pop()
            if isinstance(value, dict) and value:
                stack += [(f"{name}.{k}", v) for k, v in value.items()]
            else:
                out.append(name)
    return out


def test_a_preset_gets_its_own_dvc_yaml(tmp_path):
    """--configfile names the file in commands and params, relative to the project whatever the
    spelling, with no absolute path in the header; keys the preset leaves out are written into it.
    (The README's way, copying the preset over config.yaml, runs in test_readme.py.)"""
    project = tmp_path / "p"
    project.mkdir()
    for name in [*PROJECT_FILES, "configs", "config.yaml"]:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, project / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, project / name)
    gen = [sys.executable, str(REPO / "scripts/write_dvc_yaml.py"), "--workdir", str(project)]
    preset = load_config(project / "configs/cpu-real.yaml")
    check = sh(project, *gen, "--configfile", "configs/cpu-real.yaml", "--check", check=False)
    assert check.returncode == 1 and "leaves out keys that DVC must track (cache.max_pixels" in check.stderr

    sh(project, *gen, "--configfile", str(project / "configs/cpu-real.yaml"))  # an absolute path
    assert load_config(project / "configs/cpu-real.yaml") == preset  # keys written in at their defaults
    assert "# two models, each trained longer" in (project / "configs/cpu-real.yaml").read_text()  # comments kept
    text = (project / "dvc.yaml").read_text()
    assert str(tmp_path) not in text and str(REPO) not in text
    assert "--config config.yaml" not in text and "- config.yaml:" not in text
    data = yaml.safe_load(text)
    assert [s["fold"] for s in data["stages"]["train"]["foreach"]] == ["0", "1"]  # the preset's folds.k
    for name, stage in data["stages"].items():
        body = stage.get("do", stage)
        if "--keys" in body["cmd"]:
            assert "--config configs/cpu-real.yaml --keys" in body["cmd"], name
            assert list(body["params"][0]) == ["configs/cpu-real.yaml"], name
    assert "train.crop_size" in data["stages"]["train"]["do"]["params"][0]["configs/cpu-real.yaml"]
    sh(project, *gen, "--configfile", "configs/cpu-real.yaml", "--check")


def test_repro_runs_everything_then_nothing(repro_project):
    project, first = repro_project
    assert stages_run(first) == {"fetch_data", "check_split", "build_cache", "make_folds", "train", "predict",
                                 "report", "submit"}
    assert (project / "results/submission.csv").is_file()
    again = dvc(project, "repro")
    assert stages_run(again) == set()
    (workspace,) = json.loads(dvc(project, "metrics", "show", "--json").stdout).values()
    shown = workspace["data"]
    assert list(shown) == ["results/reports/headline.json"]  # the few numbers, not all of metrics.json
    headline = shown["results/reports/headline.json"]["data"]
    full = json.loads((project / "results/reports/metrics.json").read_text())
    assert headline == {"val": {k: full["val"][k] for k in ("auc", "tpr_at_fpr_1e-3", "log_loss")},
                        "oof": {"auc": full["oof"]["auc"]}, "val_by_method": full["val_by_method"]}


def test_dvc_stores_models_and_results_but_no_copy_of_the_images(repro_project):
    """The image cache and the raw images are rebuilt, not stored: .dvc/cache holds none of their
    bytes (the size that matters: 232 GB of cache at full scale), but every model and result."""
    project, _ = repro_project
    stored = {f"{p.parent.name}{p.name}" for p in (project / ".dvc/cache/files/md5").glob("*/*")}
    images = [*project.glob("results/cache/*/images.npy"), *(project / "results/data/raw").rglob("*.jpg")]
    assert len(images) > 100
    assert not {md5(p) for p in images} & stored
    for rel in ["results/models/fold0/best.pt", "results/models/fold1/best.pt", "results/submission.csv",
                "results/predictions/fold0/test.csv", "results/reports/metrics.json", "results/folds.csv"]:
        assert md5(project / rel) in stored, rel


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_same_submission_as_snakemake(repro_project, tiny_run):
    project, _ = repro_project
    assert (project / "results/submission.csv").read_bytes() == (tiny_run[0] / "results/submission.csv").read_bytes()


@pytest.mark.parametrize("change, expected", [
    ({"report": {"gallery_size": 2}}, {"report"}),
    ({"train": {"label_smoothing": 0.1}}, {"train", "predict", "report", "submit"}),  # a schema default before
    ({"cache": {"size": 40}}, {"build_cache", "train", "predict", "report", "submit"}),
])
def test_config_change_reruns_only_what_depends_on_it(repro_project, tmp_path, change, expected):
    project = tmp_path / "p"
    shutil.copytree(repro_project[0], project, symlinks=True)
    config = yaml.safe_load((project / "config.yaml").read_text())
    for section, values in change.items():
        config.setdefault(section, {}).update(values)
    write_config(project, config)
    assert stages_run(dvc(project, "repro")) == expected


def test_push_clone_pull_restores_results_repro_rebuilds_only_the_images_and_snakemake_agrees(repro_project,
                                                                                             tmp_path):
    project, _ = repro_project
    remote = tmp_path / "remote"
    dvc(project, "remote", "add", "-f", "-d", "local", str(remote))
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "lock and remote")
    dvc(project, "push")
    pushed = {f"{p.parent.name}{p.name}" for p in (remote / "files/md5").glob("*/*")}
    assert md5(project / "results/models/fold0/best.pt") in pushed
    assert md5(project / "results/cache/train/images.npy") not in pushed

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
    dvc(clone, "pull")
    for rel in ["results/submission.csv", "results/reports/metrics.json", "results/models/fold0/best.pt",
                "results/models/fold1/best.pt", "results/cache/train/index.csv"]:
        assert (clone / rel).read_bytes() == (project / rel).read_bytes(), rel
    assert not (clone / "results/cache/train/images.npy").exists() and not (clone / "results/data/raw").exists()
    # The stages whose outputs DVC does not store run again; they rebuild the same bytes, so nothing after them does
    assert stages_run(dvc(clone, "repro")) == {"fetch_data", "build_cache"}
    assert (clone / "results/cache/train/images.npy").read_bytes() == (project / "results/cache/train/images.npy")\
        .read_bytes()
    status = dvc(clone, "status")
    assert "up to date" in status.stdout

    # Snakemake has no metadata in a fresh clone and sees new mtimes: `--touch --forceall` adopts
    # the pulled files and records every job's params, so that later config changes are seen.
    snakemake(clone, "--touch", "--forceall")
    proc = snakemake(clone, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr, jobs_run(proc)
    proc = snakemake(clone, "-n", "--config", "cache__size=40")
    assert set(jobs_run(proc)) - {"all"} == {"build_cache", "train", "predict", "report", "submit"}
    proc = snakemake(clone, "-n", "--config", "seed=4")
    assert {"fetch_data", "make_folds", "train"} <= set(jobs_run(proc))


def test_editing_a_module_marks_the_stages_that_import_it(repro_project, tmp_path):
    """`dvc status` after an edit: the stages whose programs import the module, directly or not
    (what runs after them re-runs on `dvc repro` when their outputs change)."""
    project = tmp_path / "p"
    shutil.copytree(repro_project[0], project, symlinks=True)

    def changed_after_editing(module):
        path = project / "src/deepfake_workflow" / module
        original = path.read_text()
        path.write_text(original + "\n# an edit\n")
        status = json.loads(dvc(project, "status", "--json").stdout)
        path.write_text(original)
        return {rule_of(stage) for stage in status}

    assert changed_after_editing("training.py") == {"train"}
    assert changed_after_editing("cache.py") == {"build_cache", "train", "predict", "report"}
    assert changed_after_editing("demo/scene.py") == {"fetch_data", "check_split"}
    assert "up to date" in dvc(project, "status").stdout


def test_experiments_metrics_and_plots(repro_project, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(repro_project[0], project, symlinks=True)
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "--allow-empty", "-qm", "baseline result")
    # a key the tiny config leaves out: the generator wrote it in, so DVC tracks it and -S can set it
    assert "histogram_bins" not in TINY_CONFIG["report"]
    exp = dvc(project, "exp", "run", "-n", "bins", "-S", "config.yaml:report.histogram_bins=20")
    assert stages_run(exp) == {"report"}
    shown = dvc(project, "exp", "show", "--json").stdout
    assert "histogram_bins" in shown and "auc" in shown
    # the README's command: the experiment, its changed params and the two AUCs, in 80 columns
    table = dvc(project, "exp", "show", *EXP_SHOW_ARGS).stdout
    header = next(line for line in table.splitlines() if "Experiment" in line).split()
    assert header == ["Experiment", "oof.auc", "val.auc", "report.histogram_bins"]
    assert max(map(len, table.splitlines())) <= 80, table
    diff = dvc(project, "metrics", "diff", "--json").stdout
    assert diff.strip().startswith("{")

    # every fold's training history is drawn, and the report's plots
    plots = json.loads(dvc(project, "plots", "show", "--json").stdout)
    assert not plots.get("errors"), plots["errors"]
    for column in ("val_auc", "train_loss", "val_loss"):
        (plot,) = plots["data"][column]
        rows = plot["content"]["data"]["values"]
        assert {r["filename"] for r in rows} == {"fold0/history.csv", "fold1/history.csv"}, column
        assert all(r[column] != "" for r in rows)
    assert "results/reports/plots/roc.png" in plots["data"]
    out = tmp_path / "plots"
    dvc(project, "plots", "show", "-o", str(out))
    html = (out / "index.html").read_text()
    assert "Validation AUC by epoch" in html and "roc.png" in html


# README, "Experiments": `dvc exp show` narrowed to what an experiment changed and the two AUCs
EXP_SHOW_ARGS = ["--only-changed", "--drop", r"Created|.*/.*|val_by_method.*|val\.(log_loss|tpr.*)",
                 "--keep", r"(val|oof)\.auc"]
