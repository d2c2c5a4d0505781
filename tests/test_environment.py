"""The same environment next month: pyproject ranges, constraints.txt, the conda environment,
its post-deploy install, the packaged entry point and licence.

Not run here (no conda channels): creating the conda environment itself; the post-deploy
script's install is run with `pip --dry-run` from a copy location instead.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml
from conftest import BIN, REPO

packaging = pytest.importorskip("packaging")
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402


def _freeze_module():
    spec = importlib.util.spec_from_file_location("freeze_constraints", REPO / "scripts/freeze_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


freeze = _freeze_module()


def pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            out[canonicalize_name(name)] = version
    return out


CONSTRAINTS = pins((REPO / "constraints.txt").read_text().splitlines())


def conda_pins() -> tuple[dict, list]:
    env = yaml.safe_load((REPO / "envs/workflow.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return pins(pip), [d for d in env["dependencies"] if isinstance(d, str)]


def test_constraints_pin_every_dependency_within_the_pyproject_ranges():
    for req in freeze.project_requirements(REPO / "pyproject.toml", ["dev"]):
        name = canonicalize_name(req.name)
        assert name in CONSTRAINTS, f"{req.name} is not pinned in constraints.txt (run make constraints)"
        assert req.specifier.contains(CONSTRAINTS[name], prereleases=True), \
            f"constraints.txt pins {name}=={CONSTRAINTS[name]}, outside pyproject's {req}"
    assert "deepfake-workflow" not in CONSTRAINTS


def test_conda_environment_pins_the_same_versions_and_no_relative_path():
    conda, plain = conda_pins()
    assert conda and all(CONSTRAINTS.get(n) == v for n, v in conda.items()), \
        {n: (v, CONSTRAINTS.get(n)) for n, v in conda.items() if CONSTRAINTS.get(n) != v}
    for req in freeze.project_requirements(REPO / "pyproject.toml", []):
        assert canonicalize_name(req.name) in conda, req.name
    assert "pytest" not in conda and "ruff" not in conda  # the runtime closure only
    text = (REPO / "envs/workflow.yaml").read_text()
    assert "-e " not in text and ".." not in text
    assert any(d.startswith("python=") for d in plain)


def test_the_closure_is_what_the_project_needs_at_the_installed_versions():
    from importlib import metadata

    found = freeze.closure([Requirement("timm")])
    assert found["torch"] == metadata.version("torch").split("+")[0]
    assert "timm" in found and "pytest" not in found and "dvc" not in found
    text = freeze.constraints_text({"b": "2", "a": "1"})
    assert text.endswith("a==1\nb==2\n")


def project_copy(dest):
    """What building the package needs, away from the repo (no build/ or egg-info there)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    return dest


@pytest.fixture
def copy_location(tmp_path):
    """The env file and post-deploy script where Snakemake puts them, a working dir elsewhere."""
    conda = tmp_path / "work/.snakemake/conda"
    conda.mkdir(parents=True)
    shutil.copy2(REPO / "envs/workflow.yaml", conda / "0a1b2c3d.yaml")
    shutil.copy2(REPO / "envs/workflow.post-deploy.sh", conda / "0a1b2c3d.post-deploy.sh")
    return conda / "0a1b2c3d.post-deploy.sh"


def post_deploy(script, cwd, **env):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env}
    return subprocess.run(["bash", str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_post_deploy_installs_the_project_from_a_copy_location(copy_location, tmp_path):
    """Snakemake runs the copy from the working directory: the project comes from DEEPFAKE_WORKFLOW_ROOT
    (rules/common.smk sets it); here pip only resolves the install (--dry-run: no conda env to install into)."""
    project = project_copy(tmp_path / "project")
    proc = post_deploy(copy_location, copy_location.parents[2], DEEPFAKE_WORKFLOW_ROOT=str(project),
                       DEEPFAKE_WORKFLOW_PIP_ARGS="--dry-run --no-build-isolation --no-index")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Would install deepfake-workflow-0.1.0" in proc.stdout
    assert "-e .." not in (REPO / "envs/workflow.yaml").read_text()


def test_post_deploy_without_the_project_is_a_clear_error(copy_location):
    proc = post_deploy(copy_location, copy_location.parents[2], DEEPFAKE_WORKFLOW_ROOT="")
    assert proc.returncode == 1 and proc.stderr.startswith("error: DEEPFAKE_WORKFLOW_ROOT")


def test_snakefile_tells_the_post_deploy_script_where_the_project_is():
    assert "DEEPFAKE_WORKFLOW_ROOT=str(workflow.basedir)" in (REPO / "rules/common.smk").read_text()


def test_wheel_has_the_command_and_the_licence(tmp_path):
    project = project_copy(tmp_path / "project")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(tmp_path / "dist"), str(project)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("deepfake_workflow-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        info = {n.split("/", 1)[1]: n for n in zf.namelist() if ".dist-info/" in n}
        entry_points = zf.read(info["entry_points.txt"]).decode()
        meta = zf.read(info["METADATA"]).decode()
        assert any(n.endswith("LICENSE") for n in info)
    assert "[console_scripts]" in entry_points
    assert "deepfake-workflow = deepfake_workflow.command:main" in entry_points
    assert "License-Expression: MIT" in meta
