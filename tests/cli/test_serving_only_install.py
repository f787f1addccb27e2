"""The CLI of a serving-only install (the Docker image: no torch, pandas, pyarrow, matplotlib, sklearn)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BLOCKER = """
import importlib.abc, sys
TRAINING = {"torch", "pandas", "pyarrow", "matplotlib", "sklearn", "onnx", "onnxscript", "scipy"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in TRAINING:
            raise ImportError(f"{name} is not installed")
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["apprank", *sys.argv[1:]]
from apprank.cli import main
main()
"""


def _apprank(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", BLOCKER, *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, env={"PATH": ""})


def test_help_lists_the_serving_commands_without_training_extras() -> None:
    result = _apprank("--help")
    assert result.returncode == 0, result.stderr
    commands = set(re.findall(r"^│ (\S+)\s", result.stdout, flags=re.MULTILINE))
    assert {"serve", "report", "export-training", "purge-events"} <= commands
    assert "synth" not in commands  # needs pyarrow: left out rather than breaking --help


def test_train_says_which_extra_is_missing() -> None:
    result = _apprank("train", "--data", "x", "--out", "y")
    assert result.returncode == 2
    assert "training needs the `train` extra" in result.stderr
