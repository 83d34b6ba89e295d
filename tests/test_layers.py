"""The pipeline's layering: no module of an earlier stage imports one of a later stage.

The stages, in the order a run goes through them, are the folders of the
tree (data/, metadata/, transfer/, verify/) and a few top-level modules.
Every import counts, a lazy one inside a function too: it runs all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "pmigrate"

# In pipeline order; a module may import its own stage and the earlier ones.
ORDER = (
    "shared",  # what every stage uses and which uses no stage: errors, words, the report, progress, ...
    "data",  # the stores (data/)
    "config",  # what the run reads and keeps: plikd.cfg, the options, the journal, whose a target is
    "metadata",  # the rows (metadata/)
    "enumerate",  # the files table as blobs to handle
    "transfer",  # the blob copy (transfer/)
    "verify",  # the audit of rows and blobs (verify/)
    "run",  # what drives the stages: migrate, the CLI, the lock, the fake deployments
)
FOLDERS = {"data": "data", "metadata": "metadata", "transfer": "transfer", "verify": "verify", "fake": "run"}
TOP = {
    "config": "config",
    "dsn": "config",
    "options": "config",
    "ownership": "config",
    "journal": "config",
    "filerows": "enumerate",
    "migrate": "run",
    "cutover": "run",
    "cli": "run",
    "lock": "run",
    "fakedb": "run",
    "__main__": "run",
}


# The one import against the order the tree still holds, named so that no other may join it: the metadata
# copy's dry run counts what it would insert, update and delete with verify's row audit (verify/rows.py).
# It goes once the audit's comparison of two tables lives with the rows, in metadata/.
KNOWN: set[tuple[str, str]] = set()


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage(module: str) -> str:
    """The stage of a module pmigrate.x[.y], from where it sits in the tree."""
    parts = module.split(".")[1:]
    if not parts:
        return "shared"
    if parts[0] in FOLDERS and (len(parts) > 1 or (ROOT / parts[0]).is_dir()):
        return FOLDERS[parts[0]]
    return TOP.get(parts[0], "shared")


def _imports(path: Path, module: str) -> set[str]:
    """The pmigrate modules a file imports (``from pmigrate.a import b`` counts b when b is a module)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "pmigrate")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "pmigrate":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if _exists(sub) else base)
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _modules() -> dict[str, Path]:
    return {_module(p): p for p in sorted(ROOT.rglob("*.py"))}


def test_every_module_has_a_stage_and_the_order_knows_it():
    assert {stage(m) for m in _modules()} <= set(ORDER)
    assert stage("pmigrate.transfer.pool") == "transfer" and stage("pmigrate.verify") == "verify"
    assert stage("pmigrate.errors") == "shared" and stage("pmigrate.filerows") == "enumerate"


def test_no_module_imports_a_later_stage():
    rank = {s: i for i, s in enumerate(ORDER)}
    wrong = []
    for module, path in _modules().items():
        mine = stage(module)
        for imported in sorted(_imports(path, module)):
            theirs = stage(imported)
            if rank[theirs] > rank[mine] and (module, imported) not in KNOWN:
                wrong.append(f"{module} ({mine}) imports {imported} ({theirs})")
    assert wrong == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from pmigrate.verify import blobjob\n", {"pmigrate.verify.blobjob"}),
        ("from pmigrate.verify.blobjob import verify_blob\n", {"pmigrate.verify.blobjob"}),
        ("def f():\n    import pmigrate.verify.rows\n", {"pmigrate.verify.rows"}),
        ("from . import pool\n", {"pmigrate.transfer.pool"}),
    ],
)
def test_the_check_sees_every_form_of_import(tmp_path, source, expected):
    path = tmp_path / "worker.py"
    path.write_text(source)
    assert _imports(path, "pmigrate.transfer.worker") == expected
