"""Shared by the benchmarks that run the real workflow: its environment and a logged run."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def workflow_env() -> dict:
    """The rules call `python`: this interpreter, with this checkout's library."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO / "src"), env.get("PYTHONPATH")] if p)
    return env


def run_logged(cmd: list[str], cwd: Path, log: Path) -> float:
    """Run `cmd` with its output in `log`; its wall seconds. On failure the log's tail is
    printed and the benchmark exits, naming the log."""
    print(f"workflow: {' '.join(cmd)}  (cwd {cwd}, log {log})", flush=True)
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        rc = subprocess.call(cmd, cwd=cwd, env=workflow_env(), stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if rc != 0:
        print("\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]), file=sys.stderr)
        sys.exit(f"snakemake failed (exit {rc}) after {seconds:.0f} s; full log: {log}")
    return seconds
