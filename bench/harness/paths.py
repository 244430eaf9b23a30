"""Where the harness finds its inputs and keeps its outputs."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    bench: Path  # bench/: modules, servers, this package
    envs: Path  # bench/.envs/<framework>: one virtual environment per framework
    work: Path  # bench/.work: the trained model, wrk scripts, server logs
    tools: Path  # the directory of the interpreter running the harness (its `uv` and `modelport`)

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    @classmethod
    def default(cls) -> Paths:
        bench = Path(__file__).resolve().parent.parent
        return cls(bench=bench, envs=bench / ".envs", work=bench / ".work", tools=Path(sys.executable).parent)
