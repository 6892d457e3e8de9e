"""cluster.yaml, serve/config.yaml and the Dockerfile name only things that exist."""
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_cluster_yaml_is_consistent():
    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    assert types[cfg["head_node_type"]]["resources"]["GPU"] == 0
    gpu_types = [n for n, t in types.items() if t["resources"].get("GPU", 0) > 0]
    assert any("train" in n for n in gpu_types) and any("serve" in n for n in gpu_types)
    for t in types.values():
        assert t.get("min_workers", 0) <= t.get("max_workers", cfg["max_workers"]) <= cfg["max_workers"]
    # The cluster runs the Ray (and Python) this code is tested with: a client whose Ray differs from the
    # cluster's cannot submit jobs to it.
    import re
    import sys

    import ray

    tested = f"{ray.__version__}-py{sys.version_info.major}{sys.version_info.minor}"
    image = cfg["docker"]["image"]
    assert image.startswith(f"rayproject/ray:{tested}") and image.endswith("-gpu")
    (base,) = re.findall(r"^FROM (\S+)", (REPO / "Dockerfile").read_text(), re.M)
    assert base == image
    assert any("pip install -e" in c for c in cfg["setup_commands"])
    # The dashboard / Jobs API (no auth of their own) never listen on every interface: only via an SSH tunnel.
    (head_start,) = [c for c in cfg["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    # Ray's token authentication on every node, the token mounted from the launching machine, and the checkout
    # synced without the venv, git history or secrets.
    (worker_start,) = [c for c in cfg["worker_start_ray_commands"] if "ray start" in c]
    assert head_start.startswith("RAY_AUTH_MODE=token ") and worker_start.startswith("RAY_AUTH_MODE=token ")
    assert "/home/ray/.ray/auth_token" in cfg["file_mounts"]
    assert {".venv", ".git", ".env"} <= set(cfg["rsync_exclude"])


def _serve_app():
    import importlib.util

    spec = importlib.util.spec_from_file_location("serve_app", REPO / "serve" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    return app


def args_methods(app) -> list[str]:
    return [m.strip() for m in app["args"]["methods"].split(",")]


def test_serve_config_names_real_deployments_and_builder_args(tmp_path_factory, monkeypatch):
    from facegen.cluster.serving.app import build_app
    from facegen.cluster.serving.replicas import generator_deployment

    cfg = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    (app,) = cfg["applications"]
    assert app["import_path"] == "serve.app:deploy"
    # Safe by default: the shipped config names trained encoders and takes its keys from the environment.
    assert not app["args"].get("allow_fresh_encoders") and not app["args"].get("allow_open")
    assert app["runtime_env"]["env_vars"]["FACEGEN_API_KEYS"] == "${FACEGEN_API_KEYS}"
    exports = tmp_path_factory.mktemp("exports")
    for m in args_methods(app):
        assert app["args"][m], f"serve/config.yaml serves {m} with no trained encoder"
        (exports / m).mkdir()
        (exports / m / "config.json").write_text("{}")
    monkeypatch.setenv("FACEGEN_API_KEYS", "k1")
    # the builder accepts the file's own arguments (with its encoder directories present on this node)
    args = _serve_app().parse_args({**app["args"], **{m: str(exports / m) for m in args_methods(app)}})
    graph = build_app(args)
    names = {graph._bound_deployment.name, "FaceEncoder", *(generator_deployment(m).name for m in args.methods)}
    assert {d["name"] for d in app["deployments"]} == names
    for d in app["deployments"]:
        if d["name"].endswith("Generator"):
            assert d["autoscaling_config"]["min_replicas"] >= 1 and d["max_queued_requests"] > 0


def test_serve_builder_refuses_bad_arguments_with_their_reason(tmp_path, monkeypatch):
    """`serve run serve.app:deploy …` mistakes fail in the builder, naming the argument, before any replica starts."""
    import pytest
    from facegen.core.errors import ConfigError

    app = _serve_app()
    cases = [({"preset": "bogus"}, "unknown preset 'bogus'"), ({"dreamidentity": str(tmp_path)}, "not an exported model"),
             ({"faceclip": str(tmp_path / "nope")}, "faceclip="), ({"max_body": "ten"}, "max_body"),
             ({"colour": "red"}, "colour: unknown serve.app:deploy argument"),
             ({"methods": "flux"}, "unknown method 'flux'"),
             ({"preset": "dreamidentity-sd21", "methods": "faceclip"}, "does not configure 'faceclip'"),
             ({"methods": "faceclip", "dreamidentity": str(tmp_path)}, "is not served"),
             ({"preset": "faceclip-official"}, "give the converted checkpoint"),
             ({"preset": "facet5-flux"}, "needs a converted FaceT5 encoder")]
    for args, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            app.deploy(args)
    assert app.deploy({"preset": "tiny"}) is not None  # builds the graph (replicas start only under serve.run)
    # A real preset starts only with trained encoders and keys, unless its config says otherwise in words.
    monkeypatch.delenv("FACEGEN_API_KEYS", raising=False)
    with pytest.raises(ConfigError, match="no trained encoder given .* allow_fresh_encoders"):
        app.parse_args({"preset": "dreamidentity-sd21"})
    with pytest.raises(ConfigError, match="keys: no API keys .* allow_open"):
        app.parse_args({"preset": "dreamidentity-sd21", "allow_fresh_encoders": True})
    assert app.parse_args({"preset": "dreamidentity-sd21", "allow_fresh_encoders": True, "allow_open": True})
    monkeypatch.setenv("FACEGEN_API_KEYS", "k1")
    assert app.parse_args({"preset": "dreamidentity-sd21", "allow_fresh_encoders": True})
    assert app.parse_args({"preset": "tiny", "methods": "faceclip"}).methods == ["faceclip"]
    assert app.parse_args({"preset": "tiny"}).methods == ["dreamidentity", "faceclip", "facet5", "dreamidentity-sdxl"]
