"""`create_module`: the skeleton `modelport init` writes is a valid, working, tested module."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import ValidationError

from modelport.cli.scaffold import NAME_PATTERN, create_module
from modelport.core.manifests import Metadata, load_module_manifest
from modelport.sdk import Kind, parse_docstring
from modelport.sdk.spec import check_value

# YAML would read some of these as numbers, booleans or null if the manifest did not quote them.
GOOD_NAMES = [
    "a",
    "9",
    "digits",
    "receipt-ocr",
    "model-2",
    "a" * 63,
    "a--b",
    "no",
    "null",
    "true",
    "1e5",
    "0x1f",
]
BAD_NAMES = [
    "",
    "Digits",
    "-digits",
    "digits-",
    "my_module",
    "my.module",
    "my module",
    "dígits",
    "a" * 64,
    "..",
    "a/b",
    "digits\n",
]


def _expected_files(name: str) -> list[str]:
    test = f"tests/test_{name.replace('-', '_')}.py"
    return [".gitignore", "README.md", "inference.py", "modelport.yaml", "requirements.txt", test]


def _files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def _import(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def module_dir(tmp_path: Path) -> Path:
    return create_module("word-count", tmp_path)


def test_writes_the_skeleton(module_dir: Path, tmp_path: Path) -> None:
    assert module_dir == tmp_path / "word-count"
    assert _files(module_dir) == _expected_files("word-count")
    for path in module_dir.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert "{{" not in text, f"{path.name} has an unrendered placeholder"
            assert "{%" not in text
    assert "models/" in (module_dir / ".gitignore").read_text().split()


def test_manifest_loads_with_the_module_name(module_dir: Path) -> None:
    manifest = load_module_manifest(module_dir)
    assert manifest.metadata.name == "word-count"
    assert manifest.spec.entrypoint == "inference.py:inference"
    assert manifest.spec.requirements == "requirements.txt"
    assert (module_dir / manifest.spec.requirements).is_file()


def test_docstring_parses(module_dir: Path) -> None:
    inference = _import(module_dir / "inference.py", "scaffold_docstring_inference").inference
    spec = parse_docstring(inference.__doc__)
    assert spec.title == "Count the words of a text and list the most frequent ones."
    assert [(f.name, f.types[0].kind, f.required) for f in spec.inputs] == [("text", Kind.STR, True)]
    assert {f.name: f.default for f in spec.parameters} == {"top_n": 3, "lowercase": True}
    assert [f.name for f in spec.outputs] == ["word_count", "top_words"]


def test_manifest_example_is_a_valid_request_the_module_answers(module_dir: Path) -> None:
    example = load_module_manifest(module_dir).spec.example
    assert example is not None
    inference = _import(module_dir / "inference.py", "scaffold_example_inference").inference
    spec = parse_docstring(inference.__doc__)
    for group in ("inputs", "parameters"):
        for name, value in example[group].items():
            field = spec.get(group, name)
            assert field is not None, f"example names undeclared {group}.{name}"
            assert check_value(field, value) is None
    parameters = {f.name: f.default for f in spec.parameters if f.has_default} | example["parameters"]
    [result] = inference([parameters], [example["inputs"]], [], "default", None)
    assert set(result) == set(spec.output_names)
    assert result["word_count"] == 10
    assert result["top_words"] == [{"word": "the", "count": 3}, {"word": "cat", "count": 2}]


def test_readme_explains_running_and_calling_it(module_dir: Path) -> None:
    readme = (module_dir / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("# word-count\n")
    assert "modelport dev ." in readme
    assert "curl -X POST http://127.0.0.1:8000/api/v1/modules/word-count/predict" in readme


def test_generated_tests_pass(module_dir: Path) -> None:
    # A second module beside the first: the tests of both run together without name clashes.
    create_module("second-module", module_dir.parent)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", "-p", "no:asyncio"],
        cwd=module_dir.parent,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout


def test_fills_an_existing_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "ready").mkdir()
    assert _files(create_module("ready", tmp_path)) == _expected_files("ready")


def test_creates_missing_parents(tmp_path: Path) -> None:
    path = create_module("nested", tmp_path / "a" / "b")
    assert _files(path) == _expected_files("nested")


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_accepts_manifest_names(tmp_path: Path, name: str) -> None:
    assert load_module_manifest(create_module(name, tmp_path)).metadata.name == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_refuses_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="lowercase letters, digits and hyphens") as info:
        create_module(name, tmp_path)
    assert repr(name) in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", GOOD_NAMES + BAD_NAMES)
def test_name_rule_matches_the_manifest_schema(name: str) -> None:
    def schema_accepts(value: Any) -> bool:
        try:
            Metadata(name=value)
        except ValidationError:
            return False
        return True

    assert (NAME_PATTERN.fullmatch(name) is not None) == schema_accepts(name)


def test_refuses_an_existing_non_empty_directory(tmp_path: Path) -> None:
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "inference.py").write_text("# mine\n")
    with pytest.raises(FileExistsError, match="not empty"):
        create_module("taken", tmp_path)
    assert _files(existing) == ["inference.py"]
    assert (existing / "inference.py").read_text() == "# mine\n"


def test_refuses_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a directory\n")
    with pytest.raises(FileExistsError):
        create_module("taken", tmp_path)
    assert (tmp_path / "taken").read_text() == "not a directory\n"


def test_leaves_nothing_behind_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = Path.write_text
    calls = 0

    def failing_write(self: Path, *args: Any, **kwargs: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError("disk full")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing_write)
    with pytest.raises(OSError, match="disk full"):
        create_module("broken", tmp_path)
    assert not (tmp_path / "broken").exists()
