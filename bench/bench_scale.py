"""Benchmark: the whole workflow on N generated images in the real layout, stage by stage.

Writes N JPEGs of 512-1024 px (crops of a few noisy base pictures, JPEG quality 75-95, 32-hex
md5 names) in the Multi-FFDI layout, 70% train, 15% val, 15% phase-2 test:

    <data>/phase1/trainset/*.jpg   phase1/trainset_label.txt   (img_name,target; ~80% fake)
    <data>/phase1/valset/*.jpg     phase1/valset_label.txt     (~60% fake)
    <data>/phase2/testset1_seen/*.jpg   phase2/testset1_seen_nolabel.txt

then runs the real workflow on it with `data.source: local` (snakemake, every stage: fetch_data,
check_split, build_cache, make_folds, one epoch of the tiny timm `test_efficientnet` per fold,
predict, report, submit; a 64 px center_crop cache, the real preset's mode), and prints per job
its wall time, images/s, peak RSS and MB written (from Snakemake's `benchmark:` files, which
sample the job's process tree every 0.5 s for 15 s, then every 30 s, so short peaks of long
jobs can be missed), the bytes of its outputs, and the time of `snakemake -n` on the finished
run. The numbers are kept in <out>/scale.json; `--table` puts several runs side by side.

    python bench/bench_scale.py --n 5000
    python bench/bench_scale.py --n 20000
    python bench/bench_scale.py --n 50000            # the default N; ~9 GB of JPEGs
    python bench/bench_scale.py --table bench/.runs/scale-5000/scale.json bench/.runs/scale-20000/scale.json
    python bench/bench_scale.py --n 20000 --dvc      # then the same stages by `dvc repro`: .dvc/cache, dvc status

The generated data is kept (and reused by a rerun with the same N and seed) under
bench/.runs/scale-<N>/data; every run starts the workflow from scratch in .../work.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_run import REPO, run_logged, workflow_env  # noqa: E402

SPLITS = {  # split: (share of N, image folder, label file, share of fakes)
    "train": (0.70, "phase1/trainset", "phase1/trainset_label.txt", 0.8),
    "val": (0.15, "phase1/valset", "phase1/valset_label.txt", 0.6),
    "test": (0.15, "phase2/testset1_seen", "phase2/testset1_seen_nolabel.txt", 0.6),
}
BASES, BASE_SIDE = 6, 1280  # base pictures each image is cut from


# --------------------------------------------------------------------------- data


def split_counts(n: int) -> dict[str, int]:
    counts = {"train": round(n * SPLITS["train"][0]), "val": round(n * SPLITS["val"][0])}
    counts["test"] = n - counts["train"] - counts["val"]
    return counts


def image_name(seed: int, i: int) -> str:
    return hashlib.md5(f"scale-{seed}-{i}".encode()).hexdigest() + ".jpg"


_bases: list[np.ndarray] = []


def _init_bases(seed: int) -> None:
    """A few photo-like pictures (smooth colour fields with sensor-like noise), the same in every worker."""
    rng = np.random.default_rng([seed, 1])
    for _ in range(BASES):
        coarse = rng.integers(0, 256, (BASE_SIDE // 24 + 2, BASE_SIDE // 24 + 2, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((BASE_SIDE, BASE_SIDE), Image.Resampling.BICUBIC))
        noise = rng.integers(-6, 7, smooth.shape, dtype=np.int16)
        _bases.append(np.clip(smooth + noise, 0, 255).astype(np.uint8))


def _write_images(task: tuple[int, int, int, list[tuple[int, str]]]) -> int:
    """Write images [start, stop) (index, folder); returns the bytes written."""
    seed, start, stop, folders = task
    written = 0
    for i in range(start, stop):
        rng = np.random.default_rng([seed, 2, i])
        base = _bases[int(rng.integers(BASES))]
        width, height = (int(v) for v in rng.integers(512, 1025, 2))
        x, y = int(rng.integers(0, BASE_SIDE - width + 1)), int(rng.integers(0, BASE_SIDE - height + 1))
        crop = base[y : y + height, x : x + width]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        path = Path(_folder_of(folders, i)) / image_name(seed, i)
        Image.fromarray(np.ascontiguousarray(crop)).save(path, quality=int(rng.integers(75, 96)))
        written += path.stat().st_size
    return written


def _folder_of(folders: list[tuple[int, str]], i: int) -> str:
    for first, folder in reversed(folders):
        if i >= first:
            return folder
    raise ValueError(i)


def make_data(data: Path, n: int, seed: int, workers: int) -> dict:
    """The data set under `data` (reused when complete with the same N and seed); its summary."""
    params = {"n": n, "seed": seed, "splits": split_counts(n), "version": 1}
    done_file = data / "complete.json"
    if done_file.is_file() and json.loads(done_file.read_text())["params"] == params:
        summary = json.loads(done_file.read_text())
        print(f"data: {data} (reused: {n:,} images, {summary['bytes'] / 1e9:.2f} GB)")
        return summary
    if data.exists():
        shutil.rmtree(data)
    counts = params["splits"]
    folders, first = [], 0
    rng = np.random.default_rng([seed, 3])
    for split, count in counts.items():
        _, images, labels, fake_share = SPLITS[split]
        (data / images).mkdir(parents=True)
        folders.append((first, str(data / images)))
        names = [image_name(seed, i) for i in range(first, first + count)]
        if split == "test":
            text = "img_name\n" + "".join(f"{name}\n" for name in names)
        else:
            targets = (rng.random(count) < fake_share).astype(int)
            text = "img_name,target\n" + "".join(f"{name},{t}\n" for name, t in zip(names, targets, strict=True))
        (data / labels).write_text(text, encoding="utf-8")
        first += count
    tasks = [(seed, s, min(n, s + 100), folders) for s in range(0, n, 100)]
    started, cpu = time.perf_counter(), _children_cpu_s()
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_bases, initargs=(seed,))
    written = sum(pool.imap_unordered(_write_images, tasks))
    pool.close()
    pool.join()  # reaped: the workers' CPU time is in RUSAGE_CHILDREN
    seconds, cpu_ms = time.perf_counter() - started, (_children_cpu_s() - cpu) * 1000 / n
    summary = {"params": params, "bytes": written, "seconds": round(seconds, 1),
               "images_per_s": round(n / seconds, 1), "workers": workers, "cpu_ms_per_image": round(cpu_ms, 2)}
    done_file.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"data: {data}: {n:,} JPEGs ({written / 1e9:.2f} GB) written in {seconds:.1f} s with {workers} "
          f"worker(s), {n / seconds:.0f} images/s; {cpu_ms:.2f} CPU ms per image, so "
          f"{1000 / cpu_ms:.0f} images/s per free core")
    return summary


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- workflow


def workflow_config(data: Path, size: int, folds: int) -> dict:
    return {
        "results_dir": "results",
        "seed": 1,
        "data": {"source": "local", "root": str(data), "test_split": "phase2"},
        "cache": {"size": size, "resize": "center_crop", "on_bad_image": "error"},
        "folds": {"k": folds},
        "model": {"name": "test_efficientnet", "pretrained": False},
        "train": {"epochs": 1, "batch_size": 64, "device": "cpu", "eval_every": 1, "crop_size": None},
        "predict": {"tta": "none", "batch_size": 256},
        "report": {"gallery_size": 8},
        "submit": {"strategy": "ensemble"},
    }


def snakemake_command(work: Path, cores: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
            "--configfile", str(work / "config.yaml"), "--cores", str(cores), "--resources", "gpu=1",
            "--workflow-profile", "none", *extra]


def run_workflow(work: Path, config: dict, cores: int) -> tuple[float, float]:
    """A full run from scratch, then `snakemake -n` on the finished run: (run s, dry-run s)."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "scripts").symlink_to(REPO / "scripts")  # the rules run `python scripts/<stage>.py`
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    seconds = run_logged(snakemake_command(work, cores), work, work / "snakemake.log")
    started = time.perf_counter()
    dry = subprocess.run(snakemake_command(work, cores, "-n"), cwd=work, env=workflow_env(),
                         capture_output=True, text=True)
    dry_seconds = time.perf_counter() - started
    if dry.returncode != 0 or "Nothing to be done" not in dry.stdout + dry.stderr:
        sys.exit(f"snakemake -n on the finished run did not say 'Nothing to be done':\n{dry.stdout}{dry.stderr}")
    return seconds, dry_seconds


DVC_PROJECT_FILES = ["Snakefile", "rules", "scripts", "src", "report", "envs", ".dvcignore"]


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def run_dvc(project: Path, config: dict) -> dict:
    """The same stages through `dvc repro` in a fresh git + DVC project: its wall time, what
    .dvc/cache holds after it (against the results it wrote), and `dvc status` times."""
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    for name in DVC_PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, project / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, project / name)
    (project / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    # what the repository's .gitignore ignores under results/ (DVC git-ignores what it stores)
    (project / ".gitignore").write_text("/results/state/\n/results/logs/\n/results/benchmarks/\n/.snakemake/\n"
                                        "/results/data/raw/\n/results/cache/*/images.npy\n")
    env = dict(workflow_env(), DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="bench", GIT_COMMITTER_NAME="bench",
               GIT_AUTHOR_EMAIL="bench@example.invalid", GIT_COMMITTER_EMAIL="bench@example.invalid")
    dvc = str(Path(sys.executable).parent / "dvc")

    def call(*cmd: str) -> None:
        done = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed (exit {done.returncode}) in {project}:\n{done.stdout}{done.stderr}")

    call(sys.executable, str(REPO / "scripts/write_dvc_yaml.py"), "--workdir", str(project))
    call("git", "init", "-q")
    call(dvc, "init", "-q")
    call("git", "add", "-A")
    call("git", "commit", "-qm", "project")
    repro_s = run_logged([dvc, "repro"], project, project / "dvc-repro.log")
    status_s = []
    for _ in range(3):
        started = time.perf_counter()
        status = subprocess.run([dvc, "status"], cwd=project, env=env, capture_output=True, text=True)
        status_s.append(round(time.perf_counter() - started, 2))
        if status.returncode != 0 or "up to date" not in status.stdout:
            sys.exit(f"dvc status after dvc repro is not up to date:\n{status.stdout}{status.stderr}")
    result = {"repro_s": round(repro_s, 1), "status_s": status_s,
              "dvc_cache_bytes": _tree_bytes(project / ".dvc" / "cache"),
              "results_bytes": _tree_bytes(project / "results"),
              "image_cache_bytes": sum(p.stat().st_size for p in (project / "results" / "cache").glob("*/images.npy"))}
    print(f"dvc repro {result['repro_s']} s; .dvc/cache {result['dvc_cache_bytes'] / 1e6:.1f} MB "
          f"(results/ {result['results_bytes'] / 1e6:.1f} MB, of which images.npy "
          f"{result['image_cache_bytes'] / 1e6:.1f} MB); dvc status {status_s} s")
    return result


def _outputs(job: str) -> list[str]:
    """The paths (under results/) each job writes, by its benchmark file's name."""
    if job == "fetch_data":
        return ["data/dataset.json"]
    if job.startswith("check_split_"):
        return [f"data/splits/{job.removeprefix('check_split_')}.json"]
    if job.startswith("build_cache_"):
        return [f"cache/{job.removeprefix('build_cache_')}"]
    if job == "make_folds":
        return ["folds.csv"]
    if job.startswith("train_fold"):
        return [f"models/{job.removeprefix('train_')}", f"state/{job}"]
    if job.startswith("predict_fold"):
        fold, split = job.removeprefix("predict_").split("_")
        return [f"predictions/{fold}/{split}.csv"]
    if job == "report":
        return ["reports"]
    if job == "submit":
        return ["submission.csv"]
    return []


def _images(job: str, counts: dict[str, int]) -> int:
    """Images each job goes through once (train: the fold's epoch plus its held-out scoring)."""
    for split in counts:
        if job.endswith(f"_{split}"):  # check_split_, build_cache_, predict_fold<k>_<split>
            return counts[split]
    return {"fetch_data": sum(counts.values()), "make_folds": counts["train"], "report": counts["val"],
            "submit": counts["test"]}.get(job, counts["train"] if job.startswith("train_fold") else 0)


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


ORDER = ["fetch_data", "check_split", "build_cache", "make_folds", "train", "predict", "report", "submit"]


def _number(record: dict, key: str) -> float | None:
    return None if record.get(key, "NA") in ("NA", "-", "") else float(record[key])


def read_jobs(work: Path, counts: dict[str, int]) -> list[dict]:
    rows = []
    for tsv in (work / "results" / "benchmarks").glob("*.tsv"):
        header, values = tsv.read_text().splitlines()[:2]
        record = dict(zip(header.split("\t"), values.split("\t"), strict=True))
        job = tsv.stem
        n = _images(job, counts)
        seconds = float(record["s"])

        rows.append({"job": job, "images": n, "s": seconds, "images_per_s": n / seconds if seconds else None,
                     "max_rss_mb": _number(record, "max_rss"), "io_out_mb": _number(record, "io_out"),
                     "cpu_s": _number(record, "cpu_time"),
                     "output_mb": sum(_bytes(work / "results" / p) for p in _outputs(job)) / 1e6})
    return sorted(rows, key=lambda r: (next(i for i, s in enumerate(ORDER) if r["job"].startswith(s)), r["job"]))


def _fmt(value, spec: str) -> str:
    return "NA" if value is None else format(value, spec)


def print_jobs(result: dict) -> None:
    print(f"\n{'job':<22}{'images':>8}{'s':>9}{'images/s':>10}{'peak RSS MB':>13}{'io_out MB':>11}"
          f"{'outputs MB':>12}{'CPU s':>8}")
    for r in result["jobs"]:
        rss = _fmt(r["max_rss_mb"], ".0f") + ("*" if r["s"] < 1 else "")
        print(f"{r['job']:<22}{r['images']:>8}{r['s']:>9.1f}{_fmt(r['images_per_s'], '.0f'):>10}"
              f"{rss:>13}{_fmt(r['io_out_mb'], '.1f'):>11}{r['output_mb']:>12.1f}"
              f"{_fmt(r['cpu_s'], '.0f'):>8}")
    print("* a job shorter than Snakemake's first 0.5 s sample: its peak RSS is the shell's only")
    print(f"\nworkflow wall time {result['workflow_s']:.0f} s; snakemake -n on the finished run "
          f"{result['dry_run_s']:.1f} s; load average {result['load_before']} before, {result['load_after']} after")


def print_table(files: list[Path]) -> None:
    """Several runs side by side: per job s, images/s and peak RSS for each N."""
    runs = sorted((json.loads(f.read_text()) for f in files), key=lambda r: r["n"])
    jobs = list(dict.fromkeys(r["job"] for run in runs for r in run["jobs"]))
    head = "".join(f"{'N=' + format(run['n'], ','):>30}" for run in runs)
    print(f"{'':<22}{head}")
    print(f"{'job':<22}" + "".join(f"{'s':>8}{'images/s':>10}{'RSS MB':>12}" for _ in runs))
    for job in jobs:
        cells = ""
        for run in runs:
            r = next((x for x in run["jobs"] if x["job"] == job), None)
            rss = _fmt(r["max_rss_mb"], ".0f") + ("*" if r["s"] < 1 else " ") if r else ""
            cells += f"{r['s']:>8.1f}{_fmt(r['images_per_s'], '.0f'):>10}{rss:>12}" if r else f"{'-':>30}"
        print(f"{job:<22}{cells}")
    print(f"{'workflow wall s':<22}" + "".join(f"{run['workflow_s']:>30.0f}" for run in runs))
    print(f"{'snakemake -n s':<22}" + "".join(f"{run['dry_run_s']:>30.1f}" for run in runs))
    print(f"{'data generation s':<22}" + "".join(f"{run['data']['seconds']:>30.1f}" for run in runs))
    loads = "".join(f"{run['load_before']:>24.2f}{run['load_after']:>6.2f}" for run in runs)
    print(f"{'load before, after':<22}{loads}")
    print("* shorter than Snakemake's first 0.5 s sample: the shell's RSS only")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000, help="images in all (default 50,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="default bench/.runs/scale-<N>")
    p.add_argument("--cores", type=int, default=os.cpu_count(), help="snakemake --cores (default: all)")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="processes writing the JPEGs (default: all)")
    p.add_argument("--size", type=int, default=64, help="cache side in px (default 64)")
    p.add_argument("--folds", type=int, default=2, help="folds (default 2)")
    p.add_argument("--table", type=Path, nargs="+", metavar="SCALE_JSON", help="print these runs side by side")
    p.add_argument("--dvc", action="store_true",
                   help="then run the same stages with `dvc repro` in a fresh project (<out>/dvc): "
                        ".dvc/cache size and `dvc status` time")
    args = p.parse_args(argv)
    if args.table:
        print_table(args.table)
        return 0
    if args.n < 100:
        sys.exit("--n: at least 100 images")
    out = (args.out or REPO / "bench" / ".runs" / f"scale-{args.n}").resolve()
    load_before = round(os.getloadavg()[0], 2)
    data = make_data(out / "data", args.n, args.seed, args.workers)
    counts = data["params"]["splits"]
    run_s, dry_s = run_workflow(out / "work", workflow_config(out / "data", args.size, args.folds), args.cores)
    result = {"n": args.n, "splits": counts, "cores": args.cores, "cpus": os.cpu_count(), "cache_size": args.size,
              "folds": args.folds, "machine": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "data": data, "workflow_s": round(run_s, 1), "dry_run_s": round(dry_s, 2),
              "load_before": load_before, "load_after": round(os.getloadavg()[0], 2),
              "jobs": read_jobs(out / "work", counts)}
    print_jobs(result)
    if args.dvc:
        result["dvc"] = run_dvc(out / "dvc", workflow_config(out / "data", args.size, args.folds))
    (out / "scale.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out / 'scale.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
