"""OpenMP's idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``) in every process that trains, set before torch
loads the OpenMP runtime; a policy the user set is kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = (
    "import json, os, sys\n"
    "from apprank.cli import build_app\n"
    "build_app()\n"
    "policy_before_torch = os.environ.get('OMP_WAIT_POLICY')\n"
    "torch_loaded = 'torch' in sys.modules\n"
    "import training.trainer\n"
    "print(json.dumps([policy_before_torch, torch_loaded, os.environ.get('OMP_WAIT_POLICY')]))\n"
)


def _probe(**env: str) -> list[object]:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=base | env, check=True, capture_output=True, text=True
    )
    result: list[object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_cli_sets_passive_before_torch_is_loaded() -> None:
    assert _probe() == ["PASSIVE", False, "PASSIVE"]


def test_a_policy_set_by_the_user_is_kept() -> None:
    assert _probe(OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", False, "ACTIVE"]
