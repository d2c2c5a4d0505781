"""The workflow on a real one-node SLURM cluster (slurmctld, slurmd, munged; tests/slurm/start_cluster.sh).

Two runs through `--profile profiles/slurm`, with only the site's values over it from a second
profile (tests/slurm/profile: threads, memory and partitions for a 2-core node, squeue status
checks, 2 s polling), each under an outer `timeout -k` so that a stuck head process can never hang
the suite: the tiny demo, its head process a SLURM job of its own (profiles/slurm/run_head.sbatch),
which must give a local run's results byte for byte, every job its own SLURM job and the GPU jobs
one GPU each; and, with the head process run directly, a local copy with a bad label row, which
must fail with the failing job's log in Snakemake's output. Both run side by side on the cluster,
beside the local reference run.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY_CONFIG, snakemake_command, write_config

_NOT_ROOT = not hasattr(os, "geteuid") or os.geteuid() != 0
needs_cluster = pytest.mark.skipif(
    _NOT_ROOT or shutil.which("apt-get") is None,
    reason=("not root" if _NOT_ROOT else "no apt-get") + ": the test installs SLURM with apt-get and starts its "
    "daemons, which needs root and apt-get (as in CI)",
)

START = REPO / "tests/slurm/start_cluster.sh"
CLUSTER_DIR = Path("/tmp/deepfake-workflow-slurm")  # not a pytest tmp dir: the slurm user must reach it
SITE_PROFILE = REPO / "tests/slurm/profile"
NGPUS = 4  # the test cluster's fake GPUs (start_cluster.sh)
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
# One SLURM job per job of the tiny workflow (`all` runs in the head process).
EXPECTED_JOBS = {"fetch_data": 1, "check_split": 3, "build_cache": 3, "make_folds": 1, "train": 2,
                 "predict": 4, "report": 1, "submit": 1}
GPU_RULES = {"train", "predict"}


@pytest.fixture(scope="module")
def cluster():
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(START), str(CLUSTER_DIR)], capture_output=True, text=True, timeout=300)
    started = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("started ")]
    try:
        assert proc.returncode == 0, f"start_cluster.sh failed:\n{proc.stdout}\n{proc.stderr}"
        print(f"SLURM cluster installed and started in {time.monotonic() - t0:.0f} s")
        yield
    finally:
        for _name, pid in reversed(started):  # slurmd, slurmctld, munged: only those started here
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 20
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)


def start_run(workdir: Path, limit_s: int, *args: str, slurm: bool = True, head_job: bool = False,
              **options) -> tuple[subprocess.Popen, Path]:
    """The tests' snakemake command (conftest), through the SLURM profiles, under `timeout -k`.

    `head_job`: the head process runs as its own SLURM job (profiles/slurm/run_head.sbatch, as the
    README shows), submitted from the project folder with `sbatch --wait`, which returns its status.
    """
    profiles = ["--profile", str(REPO / "profiles/slurm")] if slurm and not head_job else []
    profiles += ["--profile", str(SITE_PROFILE)] if slurm else []
    cmd, env = snakemake_command(workdir, *profiles, *args, **options)
    out = workdir / "snakemake.out"
    cwd = workdir
    if head_job:  # the script adds --profile profiles/slurm; the site's values for the head job itself
        cmd = ["sbatch", "--wait", "--partition=cpu", "--mem=1000", f"--time={limit_s // 60 + 1}",
               f"--output={out}", str(REPO / "profiles/slurm/run_head.sbatch"), *cmd[1:]]
        out, cwd = workdir / "sbatch.out", REPO
    with out.open("w") as sink:
        proc = subprocess.Popen(["timeout", "-k", "10", str(limit_s), *cmd], cwd=cwd, env=env,
                                stdout=sink, stderr=subprocess.STDOUT)
    return proc, workdir / "snakemake.out"


def finish_run(proc: subprocess.Popen, out: Path) -> tuple[int, str, dict[str, str]]:
    rc = proc.wait()
    sbatch_out = out.with_name("sbatch.out")  # a head job's: "Submitted batch job N", sbatch's errors
    text = "".join(path.read_text() for path in (sbatch_out, out) if path.exists())
    jobs = dict(SUBMITTED.findall(text))  # SLURM job id -> its SLURM log
    # A head process killed by the timeout leaves its jobs behind (and a head job itself): cancel
    # them (finished ones are ignored).
    head = re.findall(r"Submitted batch job (\d+)", text)
    if jobs or head:
        subprocess.run(["scancel", *head, *jobs], capture_output=True)
    return rc, text, jobs


def rule_of(slurm_log: str) -> str:
    # .snakemake/slurm_logs/rule_<name>/[<wildcards>/]<jobid>.log
    return next(part[len("rule_"):] for part in Path(slurm_log).parts if part.startswith("rule_"))


def scontrol_job(job_id: str) -> dict[str, str]:
    proc = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True)
    assert proc.returncode == 0, f"SLURM has no record of job {job_id}: {proc.stderr}"
    return dict(field.split("=", 1) for field in proc.stdout.split() if "=" in field)


def threads_per_rule(text: str) -> dict[str, str]:
    """`threads:` of each rule in a Snakemake log ("rule NAME:" ... "threads: N")."""
    found, rule = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*(?:local)?rule (\w+):$", line)
        if m:
            rule = m.group(1)
        m = re.match(r"\s*threads: (\d+)$", line)
        if m and rule:
            found[rule] = m.group(1)
    return found


@pytest.fixture(scope="module")
def slurm_runs(cluster, local_copy, tiny_run, tmp_path_factory):
    good = tmp_path_factory.mktemp("slurm_demo")
    write_config(good, TINY_CONFIG)
    # A local copy whose val labels have a bad row: only check_split (a SLURM job) finds it; the
    # run asks for that job's output alone.
    bad = tmp_path_factory.mktemp("slurm_bad_labels")
    broken = bad / "data"
    shutil.copytree(local_copy, broken, symlinks=True)
    labels = broken / "phase1/valset_label.txt"
    rows = labels.read_text().splitlines()
    rows[2] = rows[2].rsplit(",", 1)[0] + ",7"
    labels.write_text("\n".join(rows) + "\n")
    write_config(bad, {**TINY_CONFIG, "data": {"source": "local", "root": str(broken)}})
    # The local reference at the SLURM jobs' 2 threads (the site profile's; tiny_run has 4, and
    # float sums differ with the thread count): tiny_run's data, cache and folds (which the first
    # test finds byte-identical to the SLURM run's), training onwards run again locally.
    reference = tmp_path_factory.mktemp("local_2_threads") / "run"
    shutil.copytree(tiny_run[0], reference, symlinks=True)

    t0 = time.monotonic()
    running = {"good": start_run(good, 420, gpus=NGPUS, head_job=True),
               "bad": start_run(bad, 240, "results/data/splits/val.json", gpus=NGPUS),
               "reference": start_run(reference, 420, "results/submission.csv", "--forcerun", "train",
                                      slurm=False, cores=2)}
    results = {name: finish_run(*run) for name, run in running.items()}
    print(f"SLURM runs and the local reference side by side: {time.monotonic() - t0:.0f} s")
    rc, text, _ = results["reference"]
    assert rc == 0, f"local reference run failed ({rc}):\n{text[-6000:]}"
    return {"good": (good, *results["good"]), "bad": (bad, *results["bad"]), "bad_labels": labels,
            "reference": reference, "reference_log": text}


@needs_cluster
def test_each_job_is_its_own_slurm_job_and_gpu_jobs_get_one_gpu(slurm_runs):
    workdir, rc, text, jobs = slurm_runs["good"]
    assert rc == 0, f"SLURM run failed (rc {rc}; 124/137: killed by the timeout):\n{text[-6000:]}"
    rules = Counter(rule_of(log) for log in jobs.values())
    assert rules == EXPECTED_JOBS, f"SLURM jobs per rule: {dict(rules)}"
    assert len(jobs) == sum(EXPECTED_JOBS.values()), "one distinct SLURM job id per job"
    (run_id,) = re.findall(r"SLURM run ID: (\S+)", text)  # the job name of all its jobs (README: scancel --name)
    # The rules whose results depend on the thread count ran locally again at the SLURM jobs' threads.
    reference_threads = threads_per_rule(slurm_runs["reference_log"])
    assert {"train", "predict"} <= set(reference_threads), reference_threads  # (1 thread is not printed)
    for job_id, log in jobs.items():
        rule, record = rule_of(log), scontrol_job(job_id)
        assert record["JobState"] == "COMPLETED", (job_id, rule, record["JobState"])
        assert record["Comment"].startswith(f"rule_{rule}"), (job_id, rule, record["Comment"])
        assert record["JobName"] == run_id, (job_id, rule, record["JobName"])
        if rule in GPU_RULES:  # resources: gpu=1 in the rule -> sbatch --gpus=1, on the profile's gpu partition
            assert record.get("TresPerJob") == "gres:gpu:1", (job_id, rule, record.get("TresPerJob"))
            assert record["Partition"] == "gpu", (job_id, rule)
        else:
            assert "gpu" not in record.get("TresPerJob", ""), (job_id, rule, record.get("TresPerJob"))
            assert record["Partition"] == "cpu", (job_id, rule)
        # The rule ran inside that job (the job's own Snakemake), with the local reference's threads.
        job_log = Path(log).read_text()
        assert f"rule {rule}:" in job_log, f"{log} does not show rule {rule} running"
        if rule in reference_threads:
            assert threads_per_rule(job_log).get(rule) == reference_threads[rule], (rule, log)


@needs_cluster
def test_slurm_results_equal_the_local_run_byte_for_byte(slurm_runs, tiny_run):
    workdir, rc, text, _ = slurm_runs["good"]
    assert rc == 0, text[-6000:]
    results = workdir / "results"
    # Up to the folds, tiny_run itself (the thread count does not change these) ...
    upstream = [f"cache/{split}/{name}" for split in ("train", "val", "test")
                for name in ("images.npy", "index.csv", "bad_images.csv")] + ["folds.csv"]
    for rel in upstream:  # (cache_info.json holds timings)
        assert (results / rel).read_bytes() == (tiny_run[0] / "results" / rel).read_bytes(), rel
    # ... from training on, the local run at the SLURM jobs' threads.
    reference = slurm_runs["reference"] / "results"
    for rel in ["models/fold0/oof.csv", "models/fold1/oof.csv", "predictions/fold0/test.csv",
                "predictions/fold1/test.csv", "submission.csv"]:  # (histories and checkpoints hold timings)
        assert (results / rel).read_bytes() == (reference / rel).read_bytes(), rel


@needs_cluster
def test_failing_job_fails_the_slurm_run_with_its_log_shown(slurm_runs):
    workdir, rc, text, jobs = slurm_runs["bad"]
    assert rc not in (0, 124, 137), f"rc {rc}: expected a failure, not success or the timeout:\n{text[-6000:]}"
    assert "check_split" in {rule_of(log) for log in jobs.values()}, "the failing rule ran as a SLURM job"
    assert "Error in rule check_split" in text
    # The stage's own error, from its log, printed by the head process (show-failed-logs).
    assert f"label file {slurm_runs['bad_labels']}, row 3: target '7'" in text, text[-6000:]
    assert not (workdir / "results/data/splits/val.json").exists(), "no finished-looking manifest"


def test_shipped_profile_sizes_real_rules_and_sends_gpu_jobs_to_the_gpu_partition():
    """What the cluster run replaces with the test site's values (set-threads, set-resources),
    checked here: Snakemake ignores a misspelt rule name there without a word."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    rules_text = "".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    blocks = {b.split(":", 1)[0]: b for b in re.split(r"^rule ", rules_text, flags=re.M)[1:]}
    rules = set(blocks)
    # gpu=1, or gpu=<train.devices> for a fold trained by several processes
    assert {name for name, b in blocks.items() if re.search(r"^\s+gpu=\S", b, re.M)} == GPU_RULES
    assert set(profile["set-threads"]) <= rules and set(profile["set-resources"]) <= rules
    default_partition = profile["default-resources"]["slurm_partition"]
    for rule in GPU_RULES:
        assert profile["set-resources"][rule]["slurm_partition"] != default_partition, rule
    # CPUs come from threads only (sbatch --cpus-per-task=<threads>), so the two never disagree.
    assert not any("cpus_per_task" in res for res in profile["set-resources"].values())
    assert "cpus_per_task" not in profile["default-resources"]
