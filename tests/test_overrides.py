"""Command-line values win over config.yaml, are validated, and a wrong data folder fails loudly.

These run Snakemake as a user does: the workdir's config.yaml is read by the Snakefile's
`configfile:` directive (no --configfile), so Snakemake hands `--config` values over before
the file's sections. Every override changes a key that config.yaml *holds*, to a new value,
and the test looks at the outputs.
"""
import pandas as pd
import pytest
from conftest import LOCAL_COPY_SIZES, TINY_CONFIG, jobs_run, snakemake, write_config


@pytest.fixture
def workdir(tmp_path):
    write_config(tmp_path, {**TINY_CONFIG, "folds": {"k": 2}})
    return tmp_path


@pytest.mark.parametrize("override, k", [("folds__k=5", 5), ("folds={k: 4}", 4)])
def test_fold_count_from_the_command_line_wins_over_config_yaml(workdir, override, k):
    snakemake(workdir, "results/folds.csv", "--config", override, configfile=False)
    folds = pd.read_csv(workdir / "results/folds.csv")
    assert sorted(folds["fold"].unique()) == list(range(k))


def test_local_data_from_the_command_line_replaces_the_demo(workdir, local_copy):
    """The README's real-data command, on a small local copy: the caches hold its images."""
    proc = snakemake(workdir, "results/cache/train/index.csv", "results/data/dataset.json",
                     "--config", "data__source=local", f"data__root={local_copy}", "cache__size=24",
                     configfile=False)
    labels = pd.read_csv(local_copy / "phase1/trainset_label.txt")
    index = pd.read_csv(workdir / "results/cache/train/index.csv")
    assert index["img_name"].tolist() == labels["img_name"].tolist()
    assert not (workdir / "results/data/raw").exists(), "the demo must not have been generated"
    line = (f"data: local {local_copy}: train {LOCAL_COPY_SIZES['n_train']}, "
            f"val {LOCAL_COPY_SIZES['n_val']}, test {LOCAL_COPY_SIZES['n_test']}")
    assert line in (workdir / "results/logs/fetch_data.log").read_text()
    assert line in proc.stdout + proc.stderr


@pytest.mark.parametrize("override, needle", [
    ("train__epochs=-1", "config key 'train.epochs': got -1, expected >= 1"),
    ("train__lr=abc", "config key 'train.lr': got \"abc\", expected type number"),
    ("train={lr: abc}", "config key 'train.lr': got \"abc\", expected type number"),
    ("folds__kk=3", "unknown config key 'folds.kk' (did you mean 'folds.k'?)"),
])
def test_bad_command_line_values_are_refused_before_any_job(workdir, override, needle):
    proc = snakemake(workdir, "-n", "--config", override, configfile=False, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and needle in out
    assert "Traceback" not in out and not (workdir / "results").exists()


def test_a_missing_data_folder_is_an_error_even_after_a_demo_run(workdir, tmp_path):
    snakemake(workdir, "results/data/dataset.json", configfile=False)
    missing = tmp_path / "not-mounted"
    proc = snakemake(workdir, "--config", f"data={{source: local, root: {missing}}}", configfile=False,
                     check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"data folder {missing} does not exist" in out
    assert jobs_run(proc) == [] and not (workdir / "results/cache").exists()


def test_an_empty_data_folder_is_an_error(workdir, tmp_path):
    empty = tmp_path / "empty"
    (empty / "phase1/trainset").mkdir(parents=True)
    (empty / "phase1/valset").mkdir(parents=True)
    proc = snakemake(workdir, "-n", "--config", "data__source=local", f"data__root={empty}",
                     configfile=False, check=False)
    assert proc.returncode != 0
    assert f"label file {empty}/phase1/trainset_label.txt of split 'train' does not exist" in proc.stdout + proc.stderr
    (empty / "phase1/trainset_label.txt").write_text("img_name,target\n")
    (empty / "phase1/valset_label.txt").write_text("img_name,target\n")
    proc = snakemake(workdir, "-n", "--config", "data__source=local", f"data__root={empty}",
                     configfile=False, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"image folder {empty}/phase1/trainset of split 'train' is empty" in out
