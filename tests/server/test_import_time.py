"""Nothing is built when hospital_server is imported (issue: "nothing built at import time").

A fresh interpreter, in an empty working directory, imports every hospital_server module and
then reports what exists: files it created, threads, open sockets, database engines, FastAPI
apps, Prometheus registries beyond the library's default one. Everything is built by
``create_app(settings)`` / ``ServerContext.build(settings)`` when asked, never by an import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import hospital_server

_PROBE = r"""
import gc, json, os, pkgutil, sys, threading, importlib
import hospital_server
names = ["hospital_server"] + [
    m.name for m in pkgutil.walk_packages(hospital_server.__path__, prefix="hospital_server.")
    if m.name != "hospital_server.migrations.env"  # Alembic's script, run by Alembic only
]
for name in names:
    importlib.import_module(name)
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from prometheus_client import CollectorRegistry, REGISTRY
objects = gc.get_objects()
def target(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:  # the descriptor listdir itself used, closed since
        return ""
sockets = [fd for fd in os.listdir("/proc/self/fd") if target(fd).startswith("socket:")]
print(json.dumps({
    "modules": len(names),
    "threads": [t.name for t in threading.enumerate() if t is not threading.main_thread()],
    "engines": sum(isinstance(o, Engine) for o in objects),
    "apps": sum(isinstance(o, FastAPI) for o in objects),
    "registries": sum(isinstance(o, CollectorRegistry) and o is not REGISTRY for o in objects),
    "sockets": len(sockets),
    "files": sorted(os.listdir(".")),
}))
"""


def test_importing_every_module_builds_nothing(tmp_path: Path) -> None:
    root = Path(hospital_server.__file__).parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHD_")}
    env["PYTHONPATH"] = str(root)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(done.stdout)
    assert report["modules"] > 40  # the walk did import the package, not just its top
    assert report["threads"] == []
    assert report["engines"] == 0
    assert report["apps"] == 0
    assert report["registries"] == 0
    assert report["sockets"] == 0
    assert report["files"] == []  # no database, key file, PKI or log created by an import
