"""What `bastion serve` runs in each worker: the app with its startup objects frozen out
of the garbage collector, so a full collection no longer walks them (a stall of every
request on the worker). Run in a fresh process: freezing is process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import gc, json
from bastion.api.app import create_served_app
create_served_app()
print(json.dumps({"frozen": gc.get_freeze_count(), "walked": len(gc.get_objects())}))
"""


def test_the_served_app_leaves_full_collections_little_to_walk(tmp_path: Path) -> None:
    env = {**os.environ, "BASTION_DATA_DIR": str(tmp_path)}
    bastion = str(Path(sys.executable).with_name("bastion"))
    subprocess.run([bastion, "init"], env=env, check=True, capture_output=True, timeout=120)
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["frozen"] > 100_000  # modules, the app, its routes and schemas
    assert counts["walked"] < counts["frozen"] / 20  # what a full collection still walks
