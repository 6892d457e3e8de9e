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
    assert "2.60" in cfg["docker"]["image"] and "gpu" in cfg["docker"]["image"]
    assert any("pip install -e" in c for c in cfg["setup_commands"])
    assert "2.60" in (REPO / "Dockerfile").read_text()


def test_serve_config_names_real_deployments_and_builder_args():
    import inspect

    from facegen.serving import deployments

    cfg = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    (app,) = cfg["applications"]
    assert app["import_path"] == "serve.app:deploy"
    known = {d.name for d in (deployments.Ingress, deployments.FaceEncoder, deployments.DreamIdentityGenerator,
                              deployments.FaceCLIPGenerator)}
    assert {d["name"] for d in app["deployments"]} == known
    for d in app["deployments"]:
        if d["name"].endswith("Generator"):
            assert d["autoscaling_config"]["min_replicas"] >= 1 and d["max_queued_requests"] > 0
    builder_args = set(inspect.signature(deployments.build_app).parameters)
    assert set(app["args"]) <= builder_args


def test_serve_builder_refuses_bad_arguments_with_their_reason(tmp_path):
    """`serve run serve.app:deploy …` mistakes fail in the builder, naming the argument, before any replica starts."""
    import importlib.util

    import pytest
    from facegen.errors import ConfigError

    spec = importlib.util.spec_from_file_location("serve_app", REPO / "serve" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    cases = [({"preset": "bogus"}, "unknown preset 'bogus'"), ({"m2": str(tmp_path)}, "not an exported model"),
             ({"faceclip": str(tmp_path / "nope")}, "faceclip="), ({"max_body": "ten"}, "max_body=ten"),
             ({"colour": "red"}, "unknown serve.app:deploy argument(s): colour")]
    for args, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            app.deploy(args)
    assert app.deploy({"preset": "tiny"}) is not None  # builds the graph (replicas start only under serve.run)
