"""Storage without Ray or S3: object keys cannot escape a local copy, and an export is published whole or not at all."""
import os
import shutil

import pytest
from facegen.cluster.data.storage import Storage, safe_destination
from facegen.core.errors import ConfigError


def test_object_keys_that_leave_the_prefix_are_refused(tmp_path):
    target = str(tmp_path / "copy")
    assert safe_destination(target, "unet/config.json") == os.path.join(target, "unet", "config.json")
    assert safe_destination(target, "a/../b.json") == os.path.join(target, "b.json")  # stays inside: fine
    for key in ("../x", "sub/../../x", "/etc/passwd", "../../.bashrc"):
        with pytest.raises(ConfigError, match="outside its prefix"):
            safe_destination(target, key)


def test_export_is_published_whole_or_not_at_all(tmp_path, monkeypatch):
    out = Storage.open(str(tmp_path / "run"))
    first, second = tmp_path / "first", tmp_path / "second"
    for d, files in ((first, {"config.json": "v1", "model.safetensors": "w1", "old_only.txt": "stale"}),
                     (second, {"config.json": "v2", "model.safetensors": "w2", "unet_lora/x.safetensors": "l2"})):
        for rel, text in files.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_text(text)
    out.write_tree("model", str(first))
    out.write_tree("model", str(second))  # a resumed run's export replaces the old one entirely
    model = tmp_path / "run" / "model"
    assert sorted(str(p.relative_to(model)) for p in model.rglob("*") if p.is_file()) == [
        "config.json", "model.safetensors", "unet_lora/x.safetensors"]
    assert (model / "config.json").read_text() == "v2"

    copied = []

    def crash_after_one(src, dst, *args, **kwargs):  # the job dies halfway through writing the export
        if copied:
            raise OSError("killed")
        copied.append(src)
        return shutil.copy2(src, dst)

    monkeypatch.setattr(shutil, "copy2", crash_after_one)
    with pytest.raises(OSError):
        out.write_tree("model", str(first))
    assert (model / "config.json").read_text() == "v2" and not (model / "old_only.txt").exists()  # untouched
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["model"]  # no half-written copy left behind


def test_replacing_an_export_never_leaves_a_moment_without_one(tmp_path):
    """A service replica (or --model) reading <output>/model while a job publishes a new one finds a whole export,
    the old or the new, at every instant: the directories are exchanged in one step."""
    import json
    import os
    import threading

    from facegen.cluster.data.storage import Storage

    storage, src = Storage.open(str(tmp_path / "out")), tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text('{"v": 0}')
    storage.write_tree("model", str(src))
    config, missing, done = tmp_path / "out" / "model" / "config.json", [], threading.Event()

    def reader():
        while not done.is_set():
            if not config.is_file():
                missing.append(1)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(1, 100):
        (src / "config.json").write_text(json.dumps({"v": i}))
        storage.write_tree("model", str(src))
    done.set()
    thread.join()
    assert missing == [] and json.loads(config.read_text()) == {"v": 99}
    assert os.listdir(tmp_path / "out") == ["model"]  # no temporary or old copies left behind
