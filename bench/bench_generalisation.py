"""Benchmark: does a detector trained by the workflow generalise to unseen manipulations?

Makes a Multi-FFDI-style data set from real colour photographs (bench/realphoto_data.py):
reals are random crops of a few natural photos, fakes the same kind of crop with one local
edit. Four families are in training; two more appear only in val and test. The workflow
runs end to end on it (snakemake, the given config with the data section pointed at the
generated copy), then its submission.csv is scored against the hidden test truth, which
sits outside the data root the workflow reads.

Printed: workflow wall time, counts, overall test ROC AUC, per family the AUC of that
family's fakes against all test reals, the means over seen and unseen families and the
validation AUC from the workflow's reports/metrics.json. The last line is

    auc=<overall test AUC> unseen_auc=<mean AUC over the unseen families>

    pip install -e '.[bench]'        # scikit-image: its sample photographs are the sources
    python bench/bench_generalisation.py --config config.yaml
    python bench/bench_generalisation.py --config configs/cpu-real.yaml --set train.synthetic_fakes.p=0.25
    python bench/bench_generalisation.py --data-only           # data + shortcut check only
    python bench/bench_generalisation.py --score-only results/submission.csv
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realphoto_data as rd  # noqa: E402
from workflow_run import REPO, run_logged  # noqa: E402

from deepfake_workflow.config import deep_merge, expand_dotted_keys, parse_override  # noqa: E402
from deepfake_workflow.errors import ConfigError  # noqa: E402

SHORTCUT_LIMIT = 0.65  # a per-image global statistic this predictive would be a label leak


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="config.yaml", help="workflow config to run (default config.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value (dotted key, YAML value), e.g. train.epochs=4; repeatable")
    p.add_argument("--data-dir", default=str(REPO / "bench" / ".data" / "generalisation"))
    p.add_argument("--work-dir", default=None, help="default bench/.runs/<config stem>[+<overrides>]")
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-val", type=int, default=300)
    p.add_argument("--n-test", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="processes generating images")
    p.add_argument("--cores", type=int, default=2, help="snakemake --cores")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--data-only", action="store_true", help="generate, print the data summary and stop")
    mode.add_argument("--score-only", metavar="SUBMISSION", help="score an existing submission.csv")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- data


def prepare_data(args) -> Path:
    data_dir = Path(args.data_dir).resolve()
    started = time.perf_counter()
    made = rd.ensure_dataset(data_dir, seed=args.seed, n_train=args.n_train, n_val=args.n_val,
                             n_test=args.n_test, workers=args.workers)
    seconds = time.perf_counter() - started
    how = f"generated in {seconds:.1f} s with {args.workers} worker(s)" if made else "reused: same params.json"
    print(f"data: {data_dir} ({how})")
    for split, s in rd.summarise(data_dir).items():
        fams = ", ".join(f"{m} {n}" for m, n in s["by_method"].items() if m != rd.REAL)
        print(f"  {split:5s} {s['n']:5d} images, {s['n_fake']} fake / {s['n'] - s['n_fake']} real: {fams}")
    print(f"  families seen in training: {', '.join(rd.SEEN)}; val/test only: {', '.join(rd.UNSEEN)}")
    return data_dir


def shortcut_check(data_dir: Path) -> dict:
    """AUC of simple global per-image statistics against the label on the test split."""
    paths = rd.data_paths(data_dir)
    truth = pd.read_csv(paths["test_labels"])
    folder = paths["root"] / "phase2" / "testset1_seen"
    stats = pd.DataFrame([rd.image_stats(folder / n) for n in truth["img_name"]])
    real = truth["target"] == 0
    out = {}
    print(f"shortcut check (test split, {len(truth)} images; AUC of each statistic vs the label, "
          f"0.5 = no information, flagged if max(AUC, 1-AUC) >= {SHORTCUT_LIMIT}; "
          "also the family whose fakes stand out most against all reals):")
    for col in stats.columns:
        auc = float(roc_auc_score(truth["target"], stats[col]))
        by_family = {m: float(roc_auc_score(truth["target"][pick], stats[col][pick]))
                     for m in rd.SEEN + rd.UNSEEN if (pick := real | (truth["method"] == m)).any()}
        worst = max(by_family, key=lambda m: abs(by_family[m] - 0.5))
        out[col] = {"auc": auc, "by_family": by_family}
        flag = "  <-- LEAK?" if max(auc, 1 - auc) >= SHORTCUT_LIMIT else ""
        print(f"  {col:16s} {auc:.4f}   (most: {worst} {by_family[worst]:.4f}){flag}")
    return out


# --------------------------------------------------------------------------- workflow


def run_workflow(config: Path, overrides: dict, data_dir: Path, work_dir: Path, cores: int) -> float:
    """Run snakemake on the generated data; return its wall time in seconds."""
    results = work_dir / "results"
    if results.exists():  # always a full run: the wall time covers every stage
        shutil.rmtree(results)
    cfg = deep_merge(yaml.safe_load(config.read_text(encoding="utf-8")) or {}, overrides)
    # one merged --configfile (snakemake merges it over config.yaml): the given config, pointed
    # at the generated copy; the method table feeds the report's per-method validation AUC
    # (with the families unseen in training marked), never training
    paths = rd.data_paths(data_dir)
    cfg = deep_merge(cfg, {"data": {"source": "local", "root": str(paths["root"]), "test_split": "phase2",
                                    "methods_file": str(paths["methods"])},
                           "results_dir": str(results)})
    merged = work_dir / "config.merged.yaml"
    merged.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--resources", "gpu=1",
           "--configfile", str(merged)]
    return run_logged(cmd, REPO, work_dir / "snakemake.log")


# --------------------------------------------------------------------------- scoring


def score(submission: Path, data_dir: Path) -> dict:
    truth = pd.read_csv(rd.data_paths(data_dir)["test_labels"])
    sub = pd.read_csv(submission)
    if list(sub.columns[:2]) != ["img_name", "y_pred"]:
        sys.exit(f"{submission}: expected columns img_name,y_pred, got {list(sub.columns)}")
    if sub["img_name"].duplicated().any():
        sys.exit(f"{submission}: duplicate img_name rows")
    df = truth.merge(sub[["img_name", "y_pred"]], on="img_name", how="outer", indicator=True)
    missing, extra = (df["_merge"] == "left_only").sum(), (df["_merge"] == "right_only").sum()
    if missing or extra:
        sys.exit(f"{submission}: {missing} test image(s) without a prediction, {extra} unknown name(s); "
                 f"was it made from this --data-dir ({data_dir})?")
    y_pred = pd.to_numeric(df["y_pred"], errors="coerce")
    if not np.isfinite(y_pred).all():
        sys.exit(f"{submission}: y_pred has non-numeric or non-finite values")
    real = df["target"] == 0
    out = {
        "n_test": int(len(df)), "n_fake": int((~real).sum()), "n_real": int(real.sum()),
        "auc": float(roc_auc_score(df["target"], y_pred)), "families": {},
    }
    for method in rd.SEEN + rd.UNSEEN:
        fake = df["method"] == method
        if not fake.any():
            continue
        pick = fake | real
        out["families"][method] = {
            "n": int(fake.sum()), "unseen": method in rd.UNSEEN,
            "auc": float(roc_auc_score(df["target"][pick], y_pred[pick])),
        }
    for key, names in (("seen_auc", rd.SEEN), ("unseen_auc", rd.UNSEEN)):
        aucs = [out["families"][m]["auc"] for m in names if m in out["families"]]
        out[key] = float(np.mean(aucs)) if aucs else float("nan")
    return out


def read_validation(metrics_path: Path) -> dict:
    """Validation and OOF AUC from the workflow's report (keys val.auc and oof.auc)."""
    if not metrics_path.is_file():
        return {}
    m = json.loads(metrics_path.read_text(encoding="utf-8"))
    return {"val.auc": (m.get("val") or {}).get("auc"), "oof.auc": (m.get("oof") or {}).get("auc")}


def _f(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def report(result: dict) -> None:
    if result.get("workflow_seconds") is not None:
        print(f"workflow wall time: {result['workflow_seconds']:.1f} s")
    print(f"test: {result['n_test']} images, {result['n_fake']} fake, {result['n_real']} real")
    print(f"overall test ROC AUC: {_f(result['auc'])}")
    print(f"per family (its fakes vs all {result['n_real']} test reals):")
    for method, fam in result["families"].items():
        mark = "  (unseen in training)" if fam["unseen"] else ""
        print(f"  {method:16s} n={fam['n']:4d}  auc={_f(fam['auc'])}{mark}")
    print(f"mean over seen families:   {_f(result['seen_auc'])}")
    print(f"mean over unseen families: {_f(result['unseen_auc'])}")
    for key, value in result.get("validation", {}).items():
        print(f"workflow reports/metrics.json {key}: {_f(value)}")


def main(argv=None) -> int:
    args = parse_args(argv)
    config = Path(args.config)
    if not config.is_absolute() and not config.is_file():
        config = REPO / config  # also works when started from another folder
    try:  # `train.epochs=4` -> {"train": {"epochs": 4}}, as the stage programs' --set
        overrides = expand_dotted_keys(dict(parse_override(item) for item in args.set))
    except ConfigError as exc:
        sys.exit(f"--set: {exc}")
    run_name = "+".join([config.stem] + [s.replace("/", "_") for s in args.set])
    work_dir = Path(args.work_dir or REPO / "bench" / ".runs" / run_name).resolve()
    try:
        if args.score_only:
            data_dir = Path(args.data_dir).resolve()
            if not rd.data_paths(data_dir)["test_labels"].is_file():
                sys.exit(f"no hidden truth under {data_dir}: generate the data first (--data-only)")
        else:
            data_dir = prepare_data(args)
    except rd.MissingDependency as exc:
        sys.exit(str(exc))
    result = {"data_dir": str(data_dir), "params": json.loads(rd.data_paths(data_dir)["params"].read_text())}

    if args.data_only:
        shortcut_check(data_dir)
        return 0
    work_dir.mkdir(parents=True, exist_ok=True)
    if args.score_only:
        submission = Path(args.score_only).resolve()
        result["submission"] = str(submission)
        result["validation"] = read_validation(submission.parent / "reports" / "metrics.json")
    else:
        if not config.is_file():
            sys.exit(f"config file {config} not found")
        result["config"] = str(config.resolve())
        result["overrides"] = overrides
        result["workflow_seconds"] = run_workflow(config.resolve(), overrides, data_dir, work_dir, args.cores)
        results = work_dir / "results"
        submission = results / "submission.csv"
        result["submission"] = str(submission)
        result["validation"] = read_validation(results / "reports" / "metrics.json")
    result.update(score(submission, data_dir))
    report(result)
    out = work_dir / "bench_generalisation.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    print(f"auc={result['auc']:.4f} unseen_auc={result['unseen_auc']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
