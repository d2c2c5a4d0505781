"""The library's source files a program imports: what a stage's result depends on besides its data
and config, so that editing a module re-runs exactly the stages whose programs import it.

Read from the `import` statements (ast, nothing is imported), followed through the package's own
modules: imports inside functions count too (a lazy import runs all the same).
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name


def imported_modules(program: str | Path, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Every module file of the package in `package_dir` that `program` imports, directly or
    through other modules of the package, with the `__init__.py` of each package on the way;
    sorted. Modules of other packages are ignored."""
    package_dir = Path(package_dir).resolve()
    found: set[Path] = set()
    todo = [(Path(program), None)]
    while todo:
        path, module = todo.pop()
        for name in _imported_names(path, module):
            for file in _files_of(name, package_dir):
                if file not in found:
                    found.add(file)
                    todo.append((file, _module_name(file, package_dir)))
    return sorted(found)


def _imported_names(path: Path, module: str | None) -> set[str]:
    """Dotted names that the file's import statements may load (for `from X import a`: X and X.a;
    X.a is kept only if it is a module). `module` is the file's own name, for relative imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, module, path)
            if base:
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _absolute(name: str | None, level: int, module: str | None, path: Path) -> str | None:
    if not level:
        return name
    if module is None:  # a relative import in a program outside the package cannot be resolved
        return None
    parts = module.split(".")
    if path.name != "__init__.py":
        parts = parts[:-1]  # a module's relative imports start from its package
    parts = parts[:len(parts) - (level - 1)]  # each further dot: one package up
    return ".".join(parts + ([name] if name else []))


def _module_name(file: Path, package_dir: Path) -> str:
    rel = file.relative_to(package_dir).with_suffix("")
    parts = [package_dir.name, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _files_of(name: str, package_dir: Path) -> list[Path]:
    """The package's files that importing `name` runs: each package's __init__.py on the way and
    the module itself; [] for other packages and for names that are no module (functions, classes)."""
    parts = name.split(".")
    if parts[0] != package_dir.name:
        return []
    files = []
    folder = package_dir
    for i, part in enumerate(parts):
        if i:
            if (folder / part / "__init__.py").is_file():
                folder = folder / part
            elif (folder / f"{part}.py").is_file():
                files.append(folder / f"{part}.py")
                break
            else:
                break
        files.append(folder / "__init__.py")
    return [f for f in files if f.is_file()]
