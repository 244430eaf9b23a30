"""The package's shape: layers flow one way and the public surface stays small."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import modelport.sdk

ROOT = Path(__file__).parent.parent


def test_import_layers_hold():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_sdk_exports_are_pinned():
    assert sorted(modelport.sdk.__all__) == [
        "ApiSpec",
        "CallContext",
        "FieldSpec",
        "File",
        "Kind",
        "RejectedInput",
        "SpecError",
        "TypeSpec",
        "current_call",
        "parse_docstring",
    ]
    for name in modelport.sdk.__all__:
        assert getattr(modelport.sdk, name) is not None
