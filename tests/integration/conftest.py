"""Integration fixtures: one real local Ray per test session, a local S3 server (moto) on loopback, and a way to
call a job's real entry point (jobs/NAME.py main) in-process against that Ray."""
import importlib.util
import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


_HANDED_OUT: set[int] = set()


def _free_port() -> int:
    """A port nothing listens on, never one handed out before in this session: the OS may give a just-released port
    again, and two components of one `ray start` given the same port refuse to start."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@pytest.fixture(scope="session")
def free_port():
    """free_port() → a TCP port on 127.0.0.1 that nothing listens on now."""
    return _free_port


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1; its address is in the environment before Ray starts, so workers see it."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint):
    """`ray.init(num_cpus=2, num_gpus=1)`: the declared GPU lets GPU-requesting actors schedule as on a cluster
    (they find no CUDA and run on the CPU)."""
    import ray

    # One node that is never drained: Ray Train's preemption watcher (an actor per run, polling for node drains) has
    # nothing to watch here, and on 2 CPUs each of its start-ups costs every run seconds.
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING", runtime_env={"env_vars": env})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def load_job():
    """load_job(NAME) → jobs/NAME.py as a module (the real entry point; jobs/ is not a package)."""
    return _load_job


def _load_job(name: str):
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ffhq_folder(photos):
    """ffhq_folder(root) → root/ffhq_photos holding two real face photos: the FFHQ input of a training-set build."""
    import shutil

    def make(root: Path) -> Path:
        ffhq = root / "ffhq_photos"
        ffhq.mkdir()
        shutil.copy(photos["astronaut"], ffhq / "astronaut.png")
        shutil.copy(photos["tom_hanks"], ffhq / "hanks.png")
        return ffhq

    return make


@pytest.fixture(scope="session")
def train_data(ray_cluster, load_job, ffhq_folder, tmp_path_factory):
    """A tiny training set: 2 identities × 2 edit prompts, all kept (4 self-aug rows), plus 2 FFHQ photos."""
    root = tmp_path_factory.mktemp("train_data")
    ffhq = ffhq_folder(root)
    out = root / "data"
    rc = load_job("build_data").main(["--output", str(out), "--num-identities", "2", "--ffhq", str(ffhq),
                                      "--set", "data.max_prompts=2", "--set", "data.keep_fraction=1.0",
                                      "--set", "data.steps=2"])
    assert rc == 0
    return out
