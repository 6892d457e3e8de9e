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
    (head_start,) = [c for c in cfg["head_start_ray_commands"] if c.startswith("ray start")]
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start


def _serve_app():
    import importlib.util

    spec = importlib.util.spec_from_file_location("serve_app", REPO / "serve" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    return app


def test_serve_config_names_real_deployments_and_builder_args():
    from facegen.serving import deployments

    cfg = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    (app,) = cfg["applications"]
    assert app["import_path"] == "serve.app:deploy"
    args = _serve_app().parse_args(app["args"])  # the builder accepts the file's own arguments
    graph = deployments.build_app(args)
    names = {graph._bound_deployment.name, "FaceEncoder", *(deployments.generator_deployment(m).name for m in args.methods)}
    assert {d["name"] for d in app["deployments"]} == names
    for d in app["deployments"]:
        if d["name"].endswith("Generator"):
            assert d["autoscaling_config"]["min_replicas"] >= 1 and d["max_queued_requests"] > 0


def test_serve_builder_refuses_bad_arguments_with_their_reason(tmp_path):
    """`serve run serve.app:deploy …` mistakes fail in the builder, naming the argument, before any replica starts."""
    import pytest
    from facegen.errors import ConfigError

    app = _serve_app()
    cases = [({"preset": "bogus"}, "unknown preset 'bogus'"), ({"dreamidentity": str(tmp_path)}, "not an exported model"),
             ({"faceclip": str(tmp_path / "nope")}, "faceclip="), ({"max_body": "ten"}, "max_body"),
             ({"colour": "red"}, "colour: unknown serve.app:deploy argument"),
             ({"methods": "flux"}, "unknown method 'flux'"),
             ({"preset": "dreamidentity-sd21", "methods": "faceclip"}, "does not configure 'faceclip'"),
             ({"methods": "faceclip", "dreamidentity": str(tmp_path)}, "is not served"),
             ({"preset": "faceclip-official"}, "give the converted checkpoint")]
    for args, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            app.deploy(args)
    assert app.deploy({"preset": "tiny"}) is not None  # builds the graph (replicas start only under serve.run)
    assert app.parse_args({"preset": "tiny", "methods": "faceclip"}).methods == ["faceclip"]
    assert app.parse_args({"preset": "tiny"}).methods == ["dreamidentity", "faceclip"]
