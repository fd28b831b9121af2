"""The Ray backend on a cluster started with ``ray start``, as the README documents.

A head node is started with the ``ray`` command line and a separate Python process trains
on it with ``RayEpisodes(address="auto")``. ``ray stop`` then stops every Ray process on the
machine, so this module runs on its own (after tests/test_distributed.py, whose in-process
cluster has been shut down by then).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

RAY = str(Path(sys.executable).parent / "ray")

TRAIN_ON_THE_CLUSTER = """
import torch, ray, spiral_ppl as sp
from spiral_ppl.inference.spiral import RayEpisodes, SpiralConfig
prog = sp.programs.PaintProgram(sp.renderers.Brush(canvas_size=16, grid_size=4, compile=False), steps=3)
data = prog.render({c.name: torch.randint(0, c.size, (20, 3)) for c in prog.action_space})
agent = sp.inference.Spiral(prog, config=SpiralConfig.small(reward={"kind": "l2"}, a2c={"batch_size": 8}), device="cpu")
backend = RayEpisodes(workers=2, address="auto")
agent.fit(data, 3, backend=backend, progress=False)
print("UPDATES", agent.learner.updates, "CLUSTER_CPUS", int(ray.cluster_resources()["CPU"]),
      "TASKS", backend.ledger.submitted)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


@pytest.fixture
def head_node():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    environment = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run([RAY, "start", "--head", "--num-cpus=2", f"--port={free_port()}",
                              "--include-dashboard=false", "--disable-usage-stats"],
                             capture_output=True, text=True, timeout=120, env=environment)
    assert started.returncode == 0, started.stderr[-2000:]
    yield environment
    subprocess.run([RAY, "stop"], capture_output=True, timeout=120, env=environment)


def test_training_joins_a_cluster_started_with_ray_start(head_node):
    done = subprocess.run([sys.executable, "-c", TRAIN_ON_THE_CLUSTER], capture_output=True, text=True, timeout=300,
                          env={**head_node, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    # 3 updates of 2 tasks each, plus one task per worker still out when training stopped
    assert "UPDATES 3 CLUSTER_CPUS 2 TASKS 8" in done.stdout
