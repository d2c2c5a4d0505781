"""DVC: `dvc repro` runs the same pipeline as Snakemake, versions its outputs, and both engines agree.

Real git, real dvc, a local-directory remote, the tiny demo config.
"""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import BIN, REPO, TINY_CONFIG, jobs_run, snakemake, write_config

PROJECT_FILES = ["Snakefile", "rules", "scripts", "report", "envs", ".dvcignore"]
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
        (shutil.copytree if src.is_dir() else shutil.copy)(src, path / name)
    write_config(path, config)
    (path / ".gitignore").write_text("/results/state/\n/results/logs/\n/results/benchmarks/\n/.snakemake/\n")
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
    """Same stages, commands, inputs and outputs: every Snakemake job has its DVC stage."""
    spec = importlib.util.spec_from_file_location("write_dvc_yaml", REPO / "scripts/write_dvc_yaml.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    jobs = gen.dry_run_jobs(REPO, "config.yaml")
    from dvc.repo import Repo

    stages = {s.addressing: s for s in Repo(str(REPO)).index.stages}
    full = yaml.safe_load((REPO / "config.yaml").read_text())
    from deepfake_workflow.config import validate_config

    full = validate_config(full)
    assert {j["rule"] for j in jobs} == {rule_of(name) for name in stages}
    for job in jobs:
        cmd, params = gen.to_dvc_command(job["shell"], full)
        match = [s for s in stages.values() if s.cmd == cmd]
        assert len(match) == 1, f"no DVC stage runs: {cmd}"
        stage = match[0]
        assert sorted(str(o.def_path) for o in stage.outs) == sorted(job["output"])
        deps = {str(d.def_path) for d in stage.deps if not str(d.def_path).endswith("config.yaml")}
        assert set(job["input"]) <= deps and deps - set(job["input"]) == {f"scripts/{gen.script_name(cmd)}"}


def test_repro_runs_everything_then_nothing(repro_project):
    project, first = repro_project
    assert stages_run(first) == {"fetch_data", "check_split", "build_cache", "make_folds", "train", "predict",
                                 "report", "submit"}
    assert (project / "results/submission.csv").is_file()
    again = dvc(project, "repro")
    assert stages_run(again) == set()
    metrics = dvc(project, "metrics", "show", "--json").stdout
    assert "val.auc" in metrics or '"auc"' in metrics


def test_same_submission_as_snakemake(repro_project, tiny_run):
    project, _ = repro_project
    assert (project / "results/submission.csv").read_bytes() == (tiny_run[0] / "results/submission.csv").read_bytes()


@pytest.mark.parametrize("change, expected", [
    ({"report": {"gallery_size": 2}}, {"report"}),
    ({"train": {"lr": 1.0e-3}}, {"train", "predict", "report", "submit"}),
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


def test_push_clone_pull_restores_everything_and_snakemake_agrees(repro_project, tmp_path):
    project, _ = repro_project
    remote = tmp_path / "remote"
    dvc(project, "remote", "add", "-f", "-d", "local", str(remote))
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "lock and remote")
    dvc(project, "push")

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
    dvc(clone, "pull")
    for rel in ["results/submission.csv", "results/reports/metrics.json", "results/models/fold0/best.pt",
                "results/models/fold1/best.pt", "results/cache/train/images.npy"]:
        assert (clone / rel).read_bytes() == (project / rel).read_bytes(), rel
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


def test_experiments_metrics_and_plots(repro_project, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(repro_project[0], project, symlinks=True)
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "--allow-empty", "-qm", "baseline result")
    exp = dvc(project, "exp", "run", "-S", "config.yaml:report.gallery_size=3")
    assert stages_run(exp) == {"report"}
    shown = dvc(project, "exp", "show", "--json").stdout
    assert "gallery_size" in shown and "auc" in shown
    diff = dvc(project, "metrics", "diff", "--json").stdout
    assert diff.strip().startswith("{")
    out = tmp_path / "plots"
    dvc(project, "plots", "show", "-o", str(out))
    html = (out / "index.html").read_text()
    assert "history_csv" in html and "roc.png" in html  # the per-fold training histories and report plots
