"""callbridge.standins is an optional extra: the service imports and runs without it (or h2)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import callbridge

PACKAGE_DIR = Path(callbridge.__file__).parent
IMPORT_TIMEOUT_S = 240  # every module, the speech stack included, on a loaded 2-core machine

# In a fresh interpreter where h2 and the stand-ins cannot be imported at all,
# import every other module of callbridge; print the ones that fail.
IMPORT_ALL = """
import importlib, pkgutil, sys, traceback
sys.modules["h2"] = None  # what "pip install callbridge" without [standins] leaves out
sys.modules["callbridge.standins"] = None
import callbridge
names = [m.name for m in pkgutil.walk_packages(callbridge.__path__, "callbridge.")
         if not m.name.startswith("callbridge.standins")]
failed = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name)
        traceback.print_exc()
print("imported", len(names) - len(failed), "failed", failed)
sys.exit(1 if failed or len(names) < 100 else 0)
"""


def test_every_service_module_imports_without_h2_or_the_standins():
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True,
                            timeout=IMPORT_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert "failed []" in result.stdout


def test_no_service_module_names_the_standins():
    """Also lazy (in-function) imports, which the import test above would not reach."""
    offenders = []
    for path in PACKAGE_DIR.rglob("*.py"):
        if "standins" in path.relative_to(PACKAGE_DIR).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "h2" or n.startswith(("h2.", "callbridge.standins")) or "standins" in n.split(".")
                   for n in names):
                offenders.append(f"{path.relative_to(PACKAGE_DIR)}:{node.lineno}")
    assert offenders == []
