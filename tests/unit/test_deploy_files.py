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
