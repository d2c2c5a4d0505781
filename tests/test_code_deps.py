"""Code is a dependency: each stage depends on its program and the library modules it imports, so
editing a module re-runs exactly the stages that use it (Snakemake here, DVC in test_dvc.py)."""
import os
import shutil
import subprocess
import textwrap

from conftest import REPO, jobs_run, snakemake_command

from deepfake_workflow.sources import PACKAGE_DIR, imported_modules


def names(paths, root=PACKAGE_DIR):
    return {p.relative_to(root).as_posix() for p in paths}


def test_a_program_depends_on_the_modules_it_imports_transitively():
    train = names(imported_modules(REPO / "scripts/train.py"))
    # direct imports, a lazy import inside main(), and modules reached only through them
    assert {"cache.py", "cli.py", "training.py", "models.py", "loader.py", "errors.py", "__init__.py"} <= train
    assert not {"fetch.py", "folds.py", "report.py", "demo/__init__.py"} & train
    assert "training.py" not in names(imported_modules(REPO / "scripts/predict.py"))
    assert "cache.py" in names(imported_modules(REPO / "scripts/predict.py"))
    fetch = names(imported_modules(REPO / "scripts/fetch_data.py"))
    assert {"fetch.py", "demo/__init__.py", "demo/dataset.py", "demo/scene.py"} <= fetch  # a subpackage
    assert not {"cache.py", "training.py"} & fetch


def test_relative_imports_of_every_form(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "VERSION = 1\n",
        "a.py": "from . import b\nfrom .sub import c\n",
        "b.py": "import os\nimport numpy\n",
        "sub/__init__.py": "from .c import thing\n",
        "sub/c.py": "from ..d import x\nthing = 1\n",
        "d.py": "def f():\n    from . import e  # lazy: runs all the same\n",
        "e.py": "",
        "unused.py": "",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    program = tmp_path / "prog.py"
    program.write_text(textwrap.dedent("""\
        import json
        from pkg.a import run
        """))
    found = names(imported_modules(program, package_dir=pkg), root=pkg)
    assert found == {"__init__.py", "a.py", "b.py", "sub/__init__.py", "sub/c.py", "d.py", "e.py"}


def test_snakemake_reruns_exactly_the_rules_that_import_an_edited_module(tiny_run, tmp_path):
    """A copy of the library first on PYTHONPATH (the repository stays untouched), a copy of the
    finished tiny run adopted with --touch; then one module edited at a time, dry runs only."""
    src = tmp_path / "src"
    shutil.copytree(PACKAGE_DIR, src / PACKAGE_DIR.name, ignore=shutil.ignore_patterns("__pycache__"))
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run[0], workdir, symlinks=True)

    def run(*args):
        cmd, env = snakemake_command(workdir, *args)
        env["PYTHONPATH"] = f"{src}:{env.get('PYTHONPATH', '')}"
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        return set(jobs_run(proc)) - {"all"}

    def edit(module):
        """Edit the module; returns the undo (its text and modification time back)."""
        path = src / PACKAGE_DIR.name / module
        text, st = path.read_text(), path.stat()
        path.write_text(text + "\n# an edit\n")
        return lambda: (path.write_text(text), os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns)))

    run("--touch", "--forceall")  # adopt the run with the copy's paths (then "Nothing to be done")
    undo = edit("cache.py")
    assert run("-n") == {"build_cache", "train", "predict", "report", "submit"}  # never the data or the folds
    # Undone, the run is up to date again without another --touch (a dry run changes nothing); were
    # it not, build_cache would show up below.
    undo()
    edit("training.py")
    assert run("-n") == {"train", "predict", "report", "submit"}  # train, and what reads its models
