"""`ray job submit` against a real head node started on loopback (and stopped by its own process), as users run
the jobs on a cluster: the working directory is uploaded and jobs/build_data.py runs through Ray's job API."""
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture
def head_node(free_port):
    """`ray start --head --block` on 127.0.0.1 with its own temp dir and Ray's token authentication (the token in
    RAY_AUTH_TOKEN for the node and its clients); terminating that process stops its node."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    temp = tempfile.mkdtemp(prefix="rayhead", dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dashboard = free_port(), free_port()
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--temp-dir={temp}", "--disable-usage-stats",
         # Its own agent ports: the test session's Ray already holds the default ones (52365, …).
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:  # any answer means the dashboard's job API is up (401 where Ray's token auth is on)
            requests.get(url + "/api/version", timeout=2)
            break
        except requests.ConnectionError:
            pass
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(1)
    else:
        pytest.fail("the head node's job API did not come up in 120 s")
    yield url, {**env, "RAY_ADDRESS": url}
    os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops the processes it started
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:  # its orderly shutdown takes ~30 s; this throwaway node need not wait for it
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it had stopped everything already
        pass
    shutil.rmtree(temp, ignore_errors=True)


def test_build_data_through_ray_job_submit(head_node, tmp_path):
    head_node, env = head_node
    out = tmp_path / "data"
    submit = [RAY, "job", "submit", "--address", head_node, "--working-dir", str(REPO), "--",
              sys.executable, "jobs/build_data.py", "--preset", "tiny", "--output", str(out), "--num-identities", "2",
              "--set", "data.max_prompts=1", "--set", "data.steps=2"]
    for _ in range(10):  # the job API answers before the node's agent has registered: Ray says to try again
        done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in done.stdout + done.stderr:
            break
        time.sleep(3)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout and "build_data: done" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["generated"] == 2 and manifest["counts"]["scored"] == 2
    assert len(list((out / "selfaug").glob("*.parquet"))) >= 1
    # The job ran on the submitted cluster, not on a Ray of its own: the head's job list has it.
    listed = subprocess.run([RAY, "job", "list", "--address", head_node], env=env, capture_output=True, text=True,
                            timeout=60)
    assert "build_data.py" in listed.stdout and "SUCCEEDED" in listed.stdout, listed.stdout + listed.stderr
