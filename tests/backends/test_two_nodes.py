"""Two Ray nodes on one machine (`ray start --head` and a second `ray start --address`, one CPU each): the
`videococa embed --backend ray --ray-address` CLI spreads the work over both and writes what the local path does."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray backend's tests need Ray Data: pip install 'videococa[ray]' "
                                        "(the test extra installs it, so CI runs them)")
pq = pytest.importorskip("pyarrow.parquet")

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs: list[subprocess.Popen]) -> None:
    """Stop the `ray start --block` commands we started (SIGTERM: each drains and stops its node), then SIGKILL
    whatever is left of the process group each one leads (node processes slow to exit)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 40
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of that group is slow to exit
        except ProcessLookupError:
            pass
        proc.wait()


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    if not RAY.is_file():
        pytest.skip(f"no `ray` command next to {sys.executable}")
    if ray.is_initialized():  # a driver connects to one cluster at a time
        ray.shutdown()
    logs = tmp_path_factory.mktemp("ray-logs")
    # the nodes' own temp folder (short: Ray's socket paths must stay under 108 bytes), so that the address file
    # `ray start` leaves behind never points another ray.init() on this machine at our dead cluster
    temp = tempfile.mkdtemp(prefix="vc-ray-", dir="/tmp")
    # Ray 2.60 enables token auth on a head when ~/.ray/auth_token exists, but a joining node or driver uses it
    # only when RAY_AUTH_MODE says so: say it everywhere, and make sure the token exists (auth stays on). A node
    # stopped after the test has nothing left to drain: 5 s of draining, not Ray's default 30.
    src = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "5", "PYTHONPATH": src}
    subprocess.run([str(RAY), "get-auth-token", "--generate"], env=env, capture_output=True, timeout=120, check=True)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--block", "--num-cpus=1", "--disable-usage-stats", f"--temp-dir={temp}"]
    nodes = [subprocess.Popen([str(RAY), "start", "--head", f"--port={port}", "--include-dashboard=false",
                               f"--ray-client-server-port={_free_port()}", *common], env=env, start_new_session=True,
                              stdout=open(logs / "head.log", "w"), stderr=subprocess.STDOUT)]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        nodes.append(subprocess.Popen([str(RAY), "start", f"--address={address}", *common], env=env,
                                      start_new_session=True, stdout=open(logs / "worker.log", "w"),
                                      stderr=subprocess.STDOUT))
        wait = ("import ray, sys, time\nray.init(address=sys.argv[1], logging_level='ERROR')\n"
                "while sum(n['Alive'] for n in ray.nodes()) < 2: time.sleep(0.5)\n")
        subprocess.run([sys.executable, "-c", wait, address], env=env, timeout=180, check=True, capture_output=True)
        yield address, env
    finally:
        _stop(nodes)
        shutil.rmtree(temp, ignore_errors=True)


def test_embed_spreads_over_two_nodes_and_equals_local(two_nodes, tiny_model, easy_videos, tmp_path):
    from videococa.tasks.embed import embed_to_parquet

    address, env = two_nodes
    proc = subprocess.run([sys.executable, "-m", "videococa", "embed", *easy_videos, "--frames", "4", "--json",
                           "--out", str(tmp_path / "shards"), "--backend", "ray", "--ray-address", address],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(proc.stdout)["run"]
    assert run["nodes"] == 2 and run["done"] == 5, run  # the replica holds one node's CPU: the other decodes
    embed_to_parquet(tiny_model, easy_videos, tmp_path / "local.parquet", num_frames=4)
    got = pq.read_table(tmp_path / "shards").sort_by("path")
    want = pq.read_table(tmp_path / "local.parquet").sort_by("path")
    assert got.drop(["embedding"]).equals(want.drop(["embedding"]))
