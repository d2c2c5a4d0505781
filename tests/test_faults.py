"""Killed jobs: `kill -9` mid-way, re-run, and the results equal those of an uninterrupted run."""
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter

import pandas as pd
from conftest import TINY_CONFIG, copy_of_run, jobs_run, snakemake, snakemake_command, write_config


def run_until(workdir, condition, timeout=300, delay=0.0, log=None, extra=()):
    """Start snakemake in its own process group; SIGKILL the whole group `delay` seconds after
    condition() holds. False if the run ended first."""
    cmd, env = snakemake_command(workdir, *extra)
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if condition():
                try:
                    proc.wait(timeout=delay)
                    return False  # it finished within the delay
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return True
            if proc.poll() is not None:
                return False
            time.sleep(0.05)
        raise AssertionError("condition never held")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if log:
            out.close()


def finish(workdir):
    # A SIGKILLed snakemake leaves its lock behind: --unlock, then re-run (the profile's
    # --rerun-incomplete is passed by the conftest helper).
    snakemake(workdir, "--unlock")
    return snakemake(workdir)


def assert_same_results(workdir, reference):
    """Byte-identical folds, submission and metrics.json (determinism on the CPU)."""
    for rel in ["results/submission.csv", "results/folds.csv", "results/reports/metrics.json"]:
        assert (workdir / rel).read_bytes() == (reference / rel).read_bytes(), rel
    assert not list((workdir / "results").rglob(".tmp-*"))


def test_kill_mid_training_resumes_and_matches_uninterrupted_run(tiny_run, tmp_path):
    # tiny_run's data, cache and folds: the run starts at training (test_kill_anywhere... kills
    # a run from scratch in every stage)
    copy_of_run(tiny_run[0], tmp_path, from_stage="train")
    state = tmp_path / "results/state/train_fold0/last.pt"
    assert run_until(tmp_path, state.exists), "workflow finished before training started"
    assert not (tmp_path / "results/submission.csv").exists()
    finish(tmp_path)
    log = (tmp_path / "results/logs/train_fold0.log").read_text()
    assert "resum" in log.lower(), log[-2000:]
    history = pd.read_csv(tmp_path / "results/models/fold0/history.csv")
    assert history["epoch"].tolist() == list(range(1, TINY_CONFIG["train"]["epochs"] + 1)) or \
        history["epoch"].tolist() == list(range(TINY_CONFIG["train"]["epochs"]))
    assert_same_results(tmp_path, tiny_run[0])


def test_kill_during_cache_build_leaves_nothing_that_looks_finished(tiny_run, tmp_path):
    copy_of_run(tiny_run[0], tmp_path, from_stage="build_cache")  # tiny_run's data: the run starts at the cache
    cache = tmp_path / "results/cache"

    def building():
        return cache.is_dir() and any(p.name.startswith(".tmp-") for p in cache.iterdir())

    assert run_until(tmp_path, building), "workflow finished before the cache build started"
    for split in ("train", "val", "test"):
        # either absent or complete: never a half-written images.npy under the final name
        # (Snakemake itself creates the empty output folder before the job starts)
        if (cache / split / "images.npy").exists():
            assert (cache / split / "cache_info.json").exists()
    finish(tmp_path)
    assert_same_results(tmp_path, tiny_run[0])


# Outputs that record the run rather than its results (logs, timings, resume state)
RUN_RECORDS = ("logs", "benchmarks", "state")


# Wall-clock figures that some result files carry next to the results (the only fields that may
# differ between two runs); report.html shows them too, and is built from files compared here.
TIMINGS = {"images_per_s", "seconds", "train_seconds", "epoch_seconds"}


def final_outputs(workdir):
    root = workdir / "results"
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] not in RUN_RECORDS and p.name != "report.html"}


def without_timings(path):
    """The file's bytes, or for JSON and CSV files its content less the timing fields."""
    if path.suffix == ".json":
        return {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if k not in TIMINGS}
    if path.suffix == ".csv":
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        return table.drop(columns=[c for c in table.columns if c in TIMINGS]).to_csv(index=False)
    return path.read_bytes()


# Kill moments, in pipeline order: each rule at least once (train and predict twice), at a seeded
# delay after one of its jobs starts (it creates its log file); rules already done are passed over.
KILL_RULES = ["fetch_data", "check_split", "build_cache", "make_folds", "train", "train", "predict", "predict",
              "report", "submit"]
# Kill within a job's first seconds: short jobs (a few seconds, mostly Python start-up) get short delays.
MAX_KILL_DELAY_S = {"check_split": 0.3, "make_folds": 0.3, "report": 1.0, "submit": 0.5}


def pending_rules(attempt_log):
    """The rules a re-run still has to run after a killed attempt: those of the jobs the attempt
    planned (its "Job stats" table) that it did not finish (its "Finished jobid" lines). Read from
    its log, not asked of a dry run: a snakemake start-up less per kill."""
    text = attempt_log.read_text()
    table = re.search(r"^Job stats:\njob +count\n[- ]+\n(.*?)^total +\d+$", text, re.M | re.S)
    assert table, f"no job stats in {attempt_log}:\n{text[-3000:]}"
    planned = Counter({name: int(n) for name, n in (row.split() for row in table.group(1).splitlines())})
    finished = Counter(re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)$", text, re.M))
    return {rule for rule, n in planned.items() if n > finished[rule]}


def test_kill_anywhere_then_rerun_as_the_readme_says_gives_identical_outputs(tiny_run, tmp_path):
    """SIGKILL the whole Snakemake process tree at seeded moments in every stage, re-run with
    --unlock as the README says each time, and compare every final output with an uninterrupted
    run: byte-identical, no temporary files left. Prints what each re-run had left to do."""
    import numpy as np

    rng = np.random.default_rng(int(os.environ.get("KILL_SEED", "0")))
    write_config(tmp_path, TINY_CONFIG)
    logs = tmp_path / "results/logs"
    moments = []

    def kill_in(rule, extra=()):
        started = time.time()

        def rule_started():
            return any(p.stat().st_mtime >= started for p in logs.glob(f"{rule}*.log")) if logs.is_dir() else False

        delay = round(float(rng.uniform(0.0, MAX_KILL_DELAY_S.get(rule, 1.5))), 2)
        log = tmp_path / f"attempt{len(moments)}.log"
        killed = run_until(tmp_path, rule_started, delay=delay, log=log, extra=extra)
        moments.append({"rule": rule, "delay_s": delay, "killed": killed, "rules_pending": len(pending),
                        "forced": bool(extra)})
        snakemake(tmp_path, "--unlock")
        return pending_rules(log)

    pending = set(KILL_RULES)  # a fresh folder: everything
    for rule in KILL_RULES:
        if rule in pending:
            pending = kill_in(rule)
    # report and submit run side by side at the end: one may finish before its turn comes. Then
    # it is run again on purpose (--forcerun) to be killed in it too.
    for rule in ("report", "submit"):
        if not any(m["killed"] and m["rule"] == rule for m in moments):
            pending = kill_in(rule, extra=("--forcerun", rule))
    killed_in = [m["rule"] for m in moments if m["killed"]]
    assert len(killed_in) >= 8, moments  # at least 8 kills, over all stages
    assert {"fetch_data", "build_cache", "train", "predict", "report", "submit"} <= set(killed_in), moments

    redone = jobs_run(snakemake(tmp_path))
    reference = final_outputs(tiny_run[0])
    got = final_outputs(tmp_path)
    assert sorted(got) == sorted(reference)
    differ = [rel for rel in reference if without_timings(got[rel]) != without_timings(reference[rel])]
    assert not differ, differ
    identical = [rel for rel in reference if got[rel].read_bytes() == reference[rel].read_bytes()]
    assert {"submission.csv", "folds.csv", "reports/metrics.json", "models/fold0/best.pt",
            "cache/train/images.npy", "predictions/fold1/test.csv"} <= set(identical)
    assert not list((tmp_path / "results").rglob(".tmp-*"))
    print(f"\nkill moments: {moments}\nthe final re-run ran {len(redone)} jobs: {redone}")


def tree_state(root):
    """Every file and folder under root: path, size, modification time and content hash."""
    import hashlib

    state = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        state[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return state


def test_the_raw_data_is_never_modified(local_copy, tmp_path):
    """A local data folder with bad images, hashed before and after a run killed mid-cache and a
    full run in skip mode: identical (no file written, touched, moved or added there)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(local_copy, data)
    train = data / "phase1/trainset"
    for i, payload in enumerate([b"not an image", b"\xff\xd8\xff\xe0 truncated"]):
        name = f"{i:032x}.jpg"
        (train / name).write_bytes(payload)
        with open(data / "phase1/trainset_label.txt", "a", encoding="utf-8") as fh:
            fh.write(f"{name},{i % 2}\n")
    before = tree_state(data)
    work = tmp_path / "work"
    work.mkdir()
    config = {**TINY_CONFIG, "data": {"source": "local", "root": str(data)},
              "cache": {**TINY_CONFIG["cache"], "on_bad_image": "skip"}}
    write_config(work, config)
    cache = work / "results/cache"

    def building():
        return cache.is_dir() and any(p.name.startswith(".tmp-") for p in cache.iterdir())

    assert run_until(work, building), "the run ended before the cache build started"
    assert tree_state(data) == before
    snakemake(work, "--unlock")
    snakemake(work)
    bad = pd.read_csv(cache / "train/bad_images.csv")["img_name"].tolist()
    assert bad == [f"{i:032x}.jpg" for i in range(2)]
    assert (work / "results/submission.csv").exists()
    assert tree_state(data) == before


def test_a_second_run_in_the_same_folder_is_refused_and_the_first_is_unharmed(tiny_run, tmp_path):
    """Two runs at once in one project folder: the second gets Snakemake's lock message and
    exits; the first finishes with the same results as an uninterrupted run."""
    copy_of_run(tiny_run[0], tmp_path, from_stage="train")  # tiny_run's data, cache and folds
    cmd, env = snakemake_command(tmp_path)
    first = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        log = tmp_path / "results/logs/train_fold0.log"
        deadline = time.monotonic() + 300
        while not log.exists():  # the first run is training
            assert first.poll() is None and time.monotonic() < deadline, "the first run ended before training"
            time.sleep(0.1)
        second = snakemake(tmp_path, check=False)
        assert second.returncode != 0
        assert "cannot be locked" in second.stdout + second.stderr and "Traceback" not in second.stderr
        out, _ = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, out[-3000:]
    assert_same_results(tmp_path, tiny_run[0])
