"""The README is tested: every shell command in its fenced blocks runs, as a user would run it.

Each ```bash block in README.md is preceded by a marker comment:

    <!-- readme-test: NAME -->                 run by the handler NAME below
    <!-- readme-test: NAME; skip 2: REASON --> the same, but command 2 of the block is not run
    <!-- readme-test: skip: REASON -->         not run here (a real cluster, S3, conda, ...)

The blocks run in README order in one copy of the project, as a new user follows the README
top to bottom: the command text is taken from the README exactly, except for the paths in
PATHS (a data folder, a remote) and the config (config.yaml is a tiny demo, so that
`make demo` takes a minute). Editing a README command into one that no longer works fails
its test; a ```bash block without a marker, or a marker without a handler, fails too.
Usage lines in the config files' comments must be README commands (so they are run here).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import BIN, LOCAL_COPY_SIZES, REPO, TINY_CONFIG, jobs_run

README = REPO / "README.md"
MARKER = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->")
USAGE_LINE = re.compile(r"^#\s+((?:snakemake|python|pip|dvc|make|sbatch)\b.*?)\s*$")
CONFIG_FILES_WITH_USAGE = ["config.yaml", "configs/*.yaml", "profiles/*/config.yaml"]
# The demo, tiny: `make demo` and every full run in the walkthrough take a minute, not four.
README_CONFIG = {**TINY_CONFIG, "data": {"source": "demo", "demo": {"n_train": 40, "n_val": 24, "n_test": 16,
                                                                   "min_size": 64, "max_size": 96}},
                 "train": {**TINY_CONFIG["train"], "epochs": 1}}
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
       "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}


@dataclass
class Block:
    name: str
    commands: list[str]
    line: int
    skip_reason: str | None = None  # the whole block
    skip_commands: dict[int, str] = field(default_factory=dict)  # 1-based command number -> reason


def commands_of(text: str) -> list[str]:
    """Shell commands of a block: one per line, `\\` continuations joined, comments kept."""
    commands, current = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() and not current:
            continue
        current = f"{current} {line.strip()}" if current else line.strip()
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        commands.append(current)
        current = ""
    return commands


def parse_readme(text: str) -> list[Block]:
    blocks, pending = [], None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.search(line)
        if marker:
            pending = (marker.group(1), i + 1)
        elif line.lstrip().startswith("```"):  # fences may be indented (a block inside a list)
            lang = line.lstrip()[3:].strip()
            end = next(j for j in range(i + 1, len(lines)) if lines[j].lstrip().startswith("```"))
            if lang in ("bash", "sh", "shell", "console"):
                if pending is None or pending[1] < i:
                    blocks.append(Block("<unmarked>", commands_of("\n".join(lines[i + 1:end])), i + 1))
                else:
                    blocks.append(_block(pending[0], commands_of("\n".join(lines[i + 1:end])), i + 1))
            pending = None
            i = end
        i += 1
    return blocks


def _block(spec: str, commands: list[str], line: int) -> Block:
    parts = [p.strip() for p in spec.split(";")]
    if parts[0].startswith("skip:"):
        return Block("skip", commands, line, skip_reason=parts[0][len("skip:"):].strip())
    block = Block(parts[0], commands, line)
    for part in parts[1:]:
        m = re.fullmatch(r"skip (\d+):\s*(.+)", part)
        if not m:
            raise ValueError(f"README line {line}: bad marker part {part!r}")
        block.skip_commands[int(m.group(1))] = m.group(2)
    return block


BLOCKS = parse_readme(README.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- the project copy


class Walkthrough:
    """One copy of the project in which the README's blocks run in order."""

    def __init__(self, root: Path, local_copy: Path):
        self.root = root
        self.project = root / "project"
        self.paths = {  # README path -> path here
            "/data/multiFFDI": str(local_copy),
            "/mnt/shared/dvcstore": str(root / "dvcstore"),
            "path/to/images/": str(root / "images") + "/",
            "more.jpg": str(root / "more.jpg"),
            "../shared-project": str(root / "shared-project"),
        }
        self.done: dict[int, str] = {}  # block index -> "ok" or the failure
        self.cwd = self.project
        _copy_project(self.project)

    def run(self, command: str, *, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
        for readme_path, here in self.paths.items():
            command = command.replace(readme_path, here)
        proc = subprocess.run(["bash", "-c", command], cwd=self.cwd, env=ENV, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"README command failed ({proc.returncode}): {command}\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        return proc


def _copy_project(dest: Path) -> None:
    """The files a fresh clone has (tracked and new, not ignored), a tiny config, the test's venv."""
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, names):
        src = REPO / name
        if not src.exists() or src.is_dir() or name.startswith("bench/.") or name.startswith(".venv"):
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, target)
    (dest / "config.yaml").write_text(yaml.safe_dump(README_CONFIG, sort_keys=False))
    # `make` sees the test's own virtualenv as already set up (no reinstall from the copy)
    venv = Path(sys.prefix)
    (dest / ".venv").symlink_to(venv)
    marker = venv / ".installed"
    os.utime(dest / "pyproject.toml", (0, 0))
    if marker.exists():
        os.utime(marker)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "clone"]):
        subprocess.run(cmd, cwd=dest, env=ENV, check=True, capture_output=True)


@pytest.fixture(scope="module")
def walk(tmp_path_factory, local_copy):
    return Walkthrough(tmp_path_factory.mktemp("readme"), local_copy)


# ----------------------------------------------------------------------------- handlers
# Each gets the walkthrough and the block's commands (README text), runs every command it is
# given, and checks what the README says next to it.

HANDLERS = {}


def handler(name):
    def register(fn):
        HANDLERS[name] = fn
        return fn
    return register


def outputs_of_a_full_run(project: Path, k: int) -> None:
    res = project / "results"
    sub = pd.read_csv(res / "submission.csv")
    assert list(sub.columns) == ["img_name", "y_pred"] and sub["y_pred"].between(0, 1).all()
    for name in ("reports/report.html", "reports/metrics.json", "reports/plots/roc.png"):
        assert (res / name).is_file(), name
    for fold in range(k):
        for name in ("best.pt", "history.csv", "oof.csv", "metrics.json"):
            assert (res / f"models/fold{fold}" / name).is_file()


@handler("quickstart")
def _quickstart(w: Walkthrough, commands):
    assert commands[0].startswith("make demo")
    w.run(commands[0])
    outputs_of_a_full_run(w.project, README_CONFIG["folds"]["k"])


@handler("drive-snakemake")
def _drive(w, commands):
    for command in commands:
        proc = w.run(command)
        out = proc.stdout + proc.stderr
        if command.split("#")[0].strip() == "snakemake":
            assert "Nothing to be done" in out, "a second run must do nothing"
        if "--report" in command:
            html = w.project / "report.html"
            assert html.is_file() and html.stat().st_size > 10_000


@handler("local-data")
def _local_data(w, commands):
    (command,) = commands
    proc = w.run(command)
    local = Path(w.paths["/data/multiFFDI"])
    labels = pd.read_csv(local / "phase1/trainset_label.txt")
    index = pd.read_csv(w.project / "results/cache/train/index.csv")
    assert index["img_name"].tolist() == labels["img_name"].tolist(), "the train cache must hold the local images"
    sub = pd.read_csv(w.project / "results/submission.csv")
    assert set(sub["img_name"]) == set(pd.read_csv(local / "phase2/testset1_seen_nolabel.txt")["img_name"])
    line = (f"data: local {local}: train {LOCAL_COPY_SIZES['n_train']}, val {LOCAL_COPY_SIZES['n_val']}, "
            f"test {LOCAL_COPY_SIZES['n_test']}")
    assert line in (w.project / "results/logs/fetch_data.log").read_text()
    assert line in (w.project / "results/reports/report.html").read_text()
    assert "fetch_data" in jobs_run(proc)


@handler("score-images")
def _score_images(w, commands):
    from PIL import Image

    images = Path(w.paths["path/to/images/"])
    images.mkdir(exist_ok=True)
    for i in range(3):
        Image.new("RGB", (80, 60), (30 * i, 100, 200)).save(images / f"photo{i}.jpg")
    Image.new("RGB", (64, 64), (200, 10, 10)).save(w.paths["more.jpg"])
    (command,) = commands
    # the installed command (make setup installs the project and its entry point)
    assert command.startswith("deepfake-workflow score ")
    proc = w.run(command)
    scores = pd.read_csv(w.project / "scores.csv")
    assert len(scores) == 4 and scores["y_pred"].between(0, 1).all()
    assert "4 images scored -> scores.csv" in proc.stdout


@handler("dvc-generate")
def _dvc_generate(w, commands):
    check = w.run("python scripts/write_dvc_yaml.py --check", check=False)
    assert check.returncode != 0, "the copy's tiny config.yaml has other folds: dvc.yaml must be stale first"
    for command in commands:
        w.run(command)
    stages = yaml.safe_load((w.project / "dvc.yaml").read_text())["stages"]
    assert [s["fold"] for s in stages["train"]["foreach"]] == ["0", "1"]


@handler("dvc-preset")
def _dvc_preset(w, commands):
    (command,) = commands
    kept = {name: (w.project / name).read_bytes() for name in ("config.yaml", "dvc.yaml")}
    w.run(command)
    stages = yaml.safe_load((w.project / "dvc.yaml").read_text())["stages"]
    assert [s["fold"] for s in stages["train"]["foreach"]] == ["0", "1"], "the preset's two folds"
    assert "train.crop_size" in stages["train"]["do"]["params"][0]["config.yaml"]
    assert "# two models" in (w.project / "config.yaml").read_text(), "the preset's comments are kept"
    for name, data in kept.items():  # back to the walkthrough's tiny config for the blocks that follow
        (w.project / name).write_bytes(data)


@handler("dvc-run")
def _dvc_run(w, commands):
    repros = 0
    for command in commands:
        proc = w.run(command)
        out = proc.stdout + proc.stderr
        if command.startswith("dvc repro"):
            repros += 1
            if repros == 1:
                assert "Running stage 'train@0'" in out
            else:
                assert "Running stage" not in out, "a second dvc repro must do nothing"
        if command.startswith("dvc metrics show"):
            assert "val.auc" in out
    assert repros == 2
    assert not w.run("git status --porcelain config.yaml dvc.yaml dvc.lock").stdout.strip(), \
        "the result (config, dvc.yaml, dvc.lock) must be committed"


@handler("dvc-share")
def _dvc_share(w, commands):
    for command in commands:
        w.run(command)
    assert "storage" in (w.project / ".dvc/config").read_text()
    assert not w.run("git status --porcelain .dvc/config").stdout.strip(), ".dvc/config must be committed"
    assert any(Path(w.paths["/mnt/shared/dvcstore"]).rglob("*")), "dvc push stored nothing"


@handler("dvc-clone")
def _dvc_clone(w, commands):
    w.paths["https://example.org/you/deepfake-workflow.git"] = str(w.project)
    for command in commands:
        if command.startswith("cd "):
            target = Path(command.split()[1])
            w.cwd = target if target.is_absolute() else w.root / target
            continue
        if command.startswith("git clone"):
            w.cwd = w.root
        proc = w.run(command)
        if command.startswith("dvc pull"):
            assert not (w.cwd / "results/cache/train/images.npy").exists(), "DVC stores no image cache"
        if command.startswith("dvc repro"):
            ran = re.findall(r"Running stage '(\w+)", proc.stdout + proc.stderr)
            assert set(ran) == {"fetch_data", "build_cache"}, ran
        if "snakemake -n" in command:
            assert "Nothing to be done" in proc.stdout + proc.stderr
    clone = w.cwd
    for rel in ("results/submission.csv", "results/models/fold0/best.pt"):
        assert (clone / rel).read_bytes() == (w.project / rel).read_bytes(), rel
    # the adoption recorded every job's params: a later config change is seen
    proc = w.run("snakemake -n --config cache__size=40")
    assert "build_cache" in jobs_run(proc) and "fetch_data" not in jobs_run(proc)


@handler("dvc-experiments")
def _dvc_experiments(w, commands):
    committed = (w.project / "results/submission.csv").read_bytes()
    for command in commands:
        proc = w.run(command)
        out = proc.stdout + proc.stderr
        if command.startswith("dvc exp run"):
            assert "Running stage 'train@0'" in out and "Running stage 'fetch_data'" not in out
        if command.startswith("dvc exp show"):
            assert "lr-3e-4" in out and "val.auc" in out and "train.lr" in out
            assert max(map(len, proc.stdout.splitlines())) <= 80, proc.stdout
    kept = yaml.safe_load(w.run("git show exp-lr-3e-4:config.yaml").stdout)
    assert kept["train"]["lr"] == 3.0e-4 != README_CONFIG["train"]["lr"], "the branch keeps the experiment's config"
    assert not w.run("git status --porcelain config.yaml dvc.lock").stdout.strip()
    assert (w.project / "results/submission.csv").read_bytes() == committed
    assert "up to date" in w.run("dvc status").stdout


@handler("unlock-resume")
def _unlock(w, commands):
    # first a killed run: snakemake with work to do, SIGKILLed once training started (its lock stays)
    shutil.rmtree(w.project / "results/models", ignore_errors=True)
    (w.project / "results/logs/train_fold0.log").unlink(missing_ok=True)  # (an earlier block's)
    proc = subprocess.Popen(["bash", "-c", "exec snakemake"], cwd=w.project, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (w.project / "results/logs/train_fold0.log").exists():
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    locked = w.run("snakemake", check=False)  # a real run (a dry run takes no lock): refused at once
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr
    for command in commands:
        w.run(command)
    outputs_of_a_full_run(w.project, README_CONFIG["folds"]["k"])
    assert not list((w.project / "results").rglob(".tmp-*")), "temporary files left behind"


@handler("overrides")
def _overrides(w, commands):
    first, second = commands
    w.run(first)
    assert pd.read_csv(w.project / "results/folds.csv")["fold"].nunique() == 5
    outputs_of_a_full_run(w.project, 5)
    w.run(second)
    assert pd.read_csv(w.project / "results/folds.csv")["fold"].nunique() == README_CONFIG["folds"]["k"]
    history = pd.read_csv(w.project / "results/models/fold0/history.csv")
    assert len(history) == 2 != README_CONFIG["train"]["epochs"]


@handler("real-preset")
def _real_preset(w, commands):
    (command,) = commands
    proc = w.run(command + " -n")  # a dry run: the preset needs a GPU and hub weights
    out = proc.stdout + proc.stderr
    assert jobs_run(proc).count("train") == 5
    assert f"{w.paths['/data/multiFFDI']}/phase1/trainset_label.txt" in out
    assert "results/predictions/fold4/test.csv" in out  # the phase-2 test set is scored


@handler("cpu-real")
def _cpu_real(w, commands):
    (command,) = commands
    proc = w.run(command + " -n")  # a dry run: the preset trains for 15 minutes
    out = proc.stdout + proc.stderr
    jobs = jobs_run(proc)
    assert jobs.count("train") == 2, "the preset trains two folds"
    assert "build_cache" in jobs, "the preset caches native pixels: a new cache"
    # the same local folder as the local-data block: its split checks stay valid
    assert "fetch_data" not in jobs and "check_split" not in jobs, out


def test_every_command_block_is_marked_and_has_a_handler():
    problems = [f"README line {b.line}: ```bash block without a <!-- readme-test: ... --> marker"
                for b in BLOCKS if b.name == "<unmarked>"]
    problems += [f"README line {b.line}: no handler '{b.name}' in tests/test_readme.py"
                 for b in BLOCKS if b.name not in HANDLERS and b.name not in ("skip", "<unmarked>")]
    used = {b.name for b in BLOCKS}
    problems += [f"handler '{n}' is not used by any README block" for n in HANDLERS if n not in used]
    assert not problems, "\n".join(problems)


def test_config_file_usage_lines_are_readme_commands():
    readme_commands = {c.split("  #")[0].strip() for b in BLOCKS for c in b.commands}
    missing = []
    for pattern in CONFIG_FILES_WITH_USAGE:
        for path in sorted(REPO.glob(pattern)):
            for line in path.read_text(encoding="utf-8").splitlines():
                m = USAGE_LINE.match(line)
                if m and m.group(1).strip() not in readme_commands:
                    missing.append(f"{path.relative_to(REPO)}: {m.group(1)}")
    assert not missing, "usage lines in config files that no README block runs:\n" + "\n".join(missing)


@pytest.mark.parametrize("index", range(len(BLOCKS)),
                         ids=[f"{b.name}@{b.line}" for b in BLOCKS])
def test_readme_block(walk, index):
    block = BLOCKS[index]
    if block.name == "skip":
        pytest.skip(f"README line {block.line}: {block.skip_reason}")
    if block.name not in HANDLERS:
        pytest.fail(f"README line {block.line}: no handler for block {block.name!r}")
    earlier = [i for i in range(index) if BLOCKS[i].name in HANDLERS and walk.done.get(i) != "ok"]
    if earlier:
        pytest.fail(f"an earlier README block did not run cleanly: {[BLOCKS[i].name for i in earlier]}")
    commands = [c for n, c in enumerate(block.commands, 1) if n not in block.skip_commands]
    walk.cwd = walk.project
    try:
        HANDLERS[block.name](walk, commands)
    except BaseException as exc:
        walk.done[index] = repr(exc)
        raise
    walk.done[index] = "ok"
    for n, reason in block.skip_commands.items():
        print(f"skipped README command {n} of '{block.name}': {block.commands[n - 1]} ({reason})")
