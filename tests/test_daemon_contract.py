"""The HTTP contract (issue 10, item 14): the API declares what it does and does what it
declares, checked by `schemathesis run --checks all` against a real daemon. The 5-minute
run is in the closing note; this is the short version that CI runs."""

import os
import re
import subprocess
import sys
from pathlib import Path

from edge_runtime.daemon_process import Daemon

CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_schemathesis_all_checks_pass(tmp_path):
    daemon = Daemon(tmp_path / "data")
    daemon.start()
    try:
        done = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "schemathesis"),
             "--config-file", str(CONFIG), "run", f"{daemon.url}/openapi.json",
             "--checks", "all", "--max-examples", "10", "--seed", "1", "--no-color"],
            capture_output=True, text=True, timeout=500, cwd=tmp_path)
        assert done.returncode == 0, done.stdout[-6000:]
        generated = re.search(r"(\d+) generated", done.stdout)
        assert generated and int(generated.group(1)) >= 200, done.stdout[-2000:]
    finally:
        daemon.stop()


def test_405_names_every_method_of_the_path(tmp_path):
    daemon = Daemon(tmp_path / "data")
    daemon.start()
    try:
        response = daemon.client.delete("/products/1/captures")
        assert response.status_code == 405
        assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}
    finally:
        daemon.stop()
