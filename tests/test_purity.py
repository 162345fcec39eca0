"""phd_protocol is sans-I/O: no event loop, no radio, no network, no files, no logging.

Two checks: a static walk over every module's import statements and calls (catches direct use),
and a fresh interpreter that imports every module and inspects ``sys.modules`` (catches
transitive imports of the frameworks).
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import phd_protocol

PACKAGE_DIR = Path(phd_protocol.__file__).parent

# Modules phd_protocol must not import, directly or (for the frameworks) transitively.
FRAMEWORKS = {
    "asyncio",
    "bleak",
    "bumble",
    "paho",
    "fastapi",
    "starlette",
    "sqlmodel",
    "sqlalchemy",
    "httpx",
    "uvicorn",
}
# Checked on our own import statements only: cryptography.x509 pulls in email.utils, which
# imports socket, without doing any I/O; that is the library's business, not ours.
DIRECT_ONLY = {
    "socket",
    "ssl",
    "selectors",
    "os",
    "io",
    "pathlib",
    "shutil",
    "tempfile",
    "subprocess",
    "logging",
    "glob",
    "sqlite3",
    "threading",
    "multiprocessing",
    "time",
    "random",
    "urllib",
    "http",
}
FORBIDDEN_CALLS = {"open", "input", "print", "exec", "eval", "__import__"}


def _modules() -> list[str]:
    names = ["phd_protocol"]
    for info in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="phd_protocol."):
        names.append(info.name)
    return names


def _source_files() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    banned = FRAMEWORKS | DIRECT_ONLY
    offences: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            offences += [a.name for a in node.names if a.name.split(".")[0] in banned]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in banned:
                offences.append(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FORBIDDEN_CALLS
        ):
            offences.append(f"{node.func.id}() at line {node.lineno}")
    return offences


@pytest.mark.parametrize("path", _source_files(), ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_no_io_imports_or_calls(path: Path) -> None:
    assert _offences(path) == [], f"{path.name} does I/O or imports an I/O module"


def test_no_framework_in_sys_modules_after_import() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    loaded = set(json.loads(out.stdout))
    assert loaded & FRAMEWORKS == set()


def test_the_static_check_catches_an_offender(tmp_path: Path) -> None:
    # Guard against a check that silently passes everything.
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom socket import socket\nopen('x')\n")
    assert _offences(bad) == ["asyncio", "socket", "open() at line 3"]
