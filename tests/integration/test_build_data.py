"""jobs/build_data.py through its real entry point on a real local Ray: the self-aug set, FFHQ ingest, resume after
SIGKILL, s3:// through a local S3 server, and bad input."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from facegen.cluster.data.build import run_build
from facegen.cluster.data.schema import SELFAUG_SCHEMA
from facegen.cluster.data.storage import Storage
from facegen.core.config.data import shipped_list
from facegen.core.face.images import decode_image

REPO = Path(__file__).resolve().parents[2]
FAST = ["--set", "data.steps=2", "--set", "data.max_prompts=3", "--set", "data.write.batch_size=3"]


def selfaug_rows(out) -> "pd.DataFrame":  # noqa: F821
    storage = Storage.open(str(out))
    return storage.read_parquet(storage.list("selfaug", suffixes=(".parquet",))).to_pandas()


@pytest.fixture(scope="module")
def tiny_build(ray_cluster, load_job, photos, s3_endpoint) -> str:
    """The module's build, all through s3:// on the local S3 server: 6 identities × 3 prompts written to a bucket, and
    an FFHQ folder read from one (two faces and a faceless photo)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="facegen-test")
    for name in ("astronaut", "tom_hanks", "no_face"):
        s3.upload_file(str(photos[name]), "facegen-test", f"faces/{name}{photos[name].suffix}")
    out = "s3://facegen-test/build"
    rc = load_job("build_data").main(["--preset", "tiny", "--output", out, "--num-identities", "6",
                                      "--ffhq", "s3://facegen-test/faces", *FAST])
    assert rc == 0
    return out


def test_selfaug_rows_schema_prompts_and_top_fraction(tiny_build):
    df = selfaug_rows(tiny_build)
    names = shipped_list("celebrities.txt")[:6]
    prompts = shipped_list("edit_prompts.txt")[:3]
    assert set(SELFAUG_SCHEMA.names) <= set(df.columns)
    # The stored face_embedding is the recognizer's unit vector of the source face (training reads it, never recomputes).
    import numpy as np

    norms = np.linalg.norm(np.stack(df["face_embedding"].to_list()), axis=1)
    assert np.allclose(norms, 1, atol=1e-4)
    assert len(df) == 6 * 3 and not df.duplicated(["subject", "prompt_index"]).any()
    assert set(df["subject"]) == set(names) and set(df["prompt"]) == set(prompts)
    for prompt in df["prompt"]:
        assert "S*" in prompt and not any(n.lower() in prompt.lower() for n in names)  # no name leaks
    face = decode_image(df["source_face"].iloc[0])
    assert face.shape == (112, 112, 3)
    assert decode_image(df["edited_image"].iloc[0]).shape == (144, 144, 3)
    assert df["id_score"].between(-1, 1).all() and (df["clip_score"] >= 0).all()
    rank = df["id_score"] + df["clip_score"] / 100
    for _, group in df.assign(rank=rank).groupby("prompt"):
        n_keep = math.ceil(len(group) * 0.25)
        assert group["kept"].sum() == n_keep
        assert group[group["kept"]]["rank"].min() >= group[~group["kept"]]["rank"].max()  # exactly the top
    manifest = Storage.open(tiny_build).read_json("manifest.json")
    c = manifest["counts"]
    assert (c["generated"], c["scored"], c["kept"], c["no_face"], c["too_small"]) == (6, 18, 6, 0, 0)
    assert manifest["preset"] == "tiny" and "generate" in manifest["throughput"]


def test_s3_input_and_output(tiny_build, s3_endpoint):
    """The build read its FFHQ photos from S3 and wrote every shard, the kept marks and the manifest there."""
    import boto3

    counts = Storage.open(tiny_build).read_json("manifest.json")["counts"]
    assert (counts["ffhq_in"], counts["ffhq_kept"], counts["ffhq_no_face"]) == (3, 2, 1)
    listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="facegen-test", Prefix="build/")
    keys = [o["Key"] for o in listed["Contents"]]
    assert "build/manifest.json" in keys and any(k.startswith("build/ffhq/part-") for k in keys)
    assert any(k.startswith("build/selfaug/part-") for k in keys)
    assert not any("/." in k or k.endswith(".tmp") for k in keys), keys  # no temporary names left behind


def test_ffhq_ingest_counts_real_photos(ray_cluster, load_job, photos, tmp_path):
    src = tmp_path / "ffhq"
    (src / "sub").mkdir(parents=True)
    shutil.copy(photos["astronaut"], src / "astronaut.png")
    shutil.copy(photos["group"], src / "sub" / "group.jpg")
    shutil.copy(photos["tom_hanks"], src / "hanks.png")
    from PIL import Image

    Image.open(photos["astronaut"]).convert("RGB").save(src / "hanks.jpg")  # same stem, another file: its own subject
    shutil.copy(photos["no_face"], src / "mask.jpg")
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (src / "notes.txt").write_text("not an image, not counted")
    out = tmp_path / "out"
    rc = load_job("build_data").main(["--output", str(out), "--num-identities", "0", "--ffhq", str(src),
                                      "--set", "data.cache_latents=true"])
    assert rc == 0
    c = json.loads((out / "manifest.json").read_text())["counts"]
    assert (c["ffhq_in"], c["ffhq_no_face"], c["ffhq_unreadable"], c["ffhq_kept"]) == (6, 1, 1, 4)
    rows = pq.read_table(out / "ffhq").to_pandas()
    assert sorted(rows["subject"]) == ["astronaut.png", "hanks.jpg", "hanks.png", "sub/group.jpg"]
    # --resume finds every photo done: none was taken for another with the same stem
    assert load_job("build_data").main(["--output", str(out), "--num-identities", "0", "--ffhq", str(src),
                                        "--set", "data.cache_latents=true", "--resume"]) == 0
    assert json.loads((out / "manifest.json").read_text())["counts"]["ffhq_kept"] == 4
    assert all("S*" in p for p in rows["prompt"])
    assert {decode_image(b).shape for b in rows["target_image"]} == {(128, 128, 3)}
    # the cached latents are the VAE's latents of the stored target image
    from diffusers import AutoencoderKL
    from facegen.cluster.data.schema import decode_latents
    from facegen.cluster.data.stages import encode_vae
    from facegen.core.weights import resolve_model

    vae = AutoencoderKL.from_pretrained(resolve_model("tiny:sd21"), subfolder="vae").eval()
    row = rows.iloc[0]
    cached = decode_latents(row["latents"], row["latents_shape"])
    with torch.no_grad():
        direct = encode_vae(vae, decode_image(row["target_image"]), "cpu", torch.float32)
    assert cached.shape == direct.shape == (4, 16, 16)
    assert abs(cached - direct).max() < 1e-2  # float16 storage


def _kill_a_map_worker(job: subprocess.Popen, deadline: float) -> str | None:
    """SIGKILL one Ray Data actor ("ray::MapWorker(…)" processes) that has been up for a second, while `job` runs."""
    import psutil

    while time.time() < deadline and job.poll() is None:
        for proc in psutil.process_iter(["cmdline", "create_time"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if cmdline.startswith("ray::MapWorker") and time.time() - proc.info["create_time"] > 1.0:
                os.kill(proc.pid, signal.SIGKILL)
                return cmdline
        time.sleep(0.1)
    return None


def test_resume_after_sigkill_equals_uninterrupted_run(ray_cluster, tiny_build, tmp_path):
    """Two faults: the driver SIGKILLed mid-build (continued with --resume), then a Ray Data actor SIGKILLed during
    the resumed build (retried by Ray Data); the rows equal an uninterrupted build's."""
    out = tmp_path / "killed"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(REPO / "jobs" / "build_data.py"), "--output", str(out), "--num-identities", "6",
           *FAST, *[f"--set=data.{stage}.batch_size=1" for stage in ("generate", "align", "edit", "score")]]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "selfaug").glob("part-*.parquet")):
        assert proc.poll() is None, "the build ended before a shard was written"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "the job finished before it could be killed"
    partial = len(selfaug_rows(out))
    assert 0 < partial < 18
    # The resumed build meets a second fault: one of its Ray Data actors is SIGKILLed while it works. Ray Data restarts
    # the actor and retries its task; the rows must still equal the uninterrupted build's.
    resumed_run = subprocess.Popen(cmd + ["--resume"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed_actor = _kill_a_map_worker(resumed_run, deadline=time.time() + 240)
    stdout, stderr = resumed_run.communicate(timeout=300)
    assert resumed_run.returncode == 0, stderr[-2000:]
    assert "already done" in stdout
    assert killed_actor, "no Ray Data actor was seen working before the resumed build ended"
    resumed, full = selfaug_rows(out), selfaug_rows(tiny_build)
    assert not resumed.duplicated(["subject", "prompt_index"]).any()
    key = ["subject", "prompt_index"]
    a, b = resumed.sort_values(key).reset_index(drop=True), full.sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key])
    assert (a["id_score"] - b["id_score"]).abs().max() < 1e-3
    assert (a["clip_score"] - b["clip_score"]).abs().max() < 1e-2
    assert a["kept"].tolist() == b["kept"].tolist()


def test_bad_input_is_refused_before_any_work(ray_cluster, load_job, tmp_path, capsys):
    job = load_job("build_data")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [
        (["--celebrities", str(tmp_path / "missing.txt")], "no such file"),
        (["--celebrities", str(empty)], "holds no names"),
        (["--ffhq", str(tmp_path / "nowhere"), "--num-identities", "0"], "no such directory"),
        (["--ffhq", str(tmp_path), "--num-identities", "0"], "holds no images"),
        (["--preset", "nope"], "unknown preset"),
        (["--set", "data.keep_fraction=lots"], "data.keep_fraction"),
    ]
    for i, (args, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        assert job.main(["--output", str(out), *args]) == 2
        assert message in capsys.readouterr().err
        assert not list(out.glob("**/*.parquet"))
    assert job.main(["--output", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert a_file.read_text() == "x"


def test_existing_output_needs_resume(tiny_build, load_job, capsys):
    storage = Storage.open(tiny_build)
    before = storage.list("selfaug")
    assert load_job("build_data").main(["--output", tiny_build, "--num-identities", "6"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert storage.list("selfaug") == before


def test_too_small_and_no_face_sources_are_counted(photos):
    """AlignStage on real photos: a face whose box is under min_face_size is rejected, a faceless photo too."""
    import pandas as pd
    from facegen.cluster.data.stages import AlignStage
    from facegen.core.config import load_preset
    from facegen.core.face.images import png_bytes
    from PIL import Image

    preset = load_preset("tiny", ["data.assume_aligned=false", "data.min_face_size=128"])
    big = Image.open(photos["astronaut"]).convert("RGB").resize((1024, 1024))
    small = Image.open(photos["astronaut"]).convert("RGB").resize((256, 256))
    df = pd.DataFrame({"subject": ["big", "small", "none"],
                       "source_image": [png_bytes(big), png_bytes(small), png_bytes(Image.open(photos["no_face"]))]})
    out = AlignStage(preset)(df)
    assert out["status"].tolist() == ["ok", "too_small", "no_face"]
    assert decode_image(out["source_face"].iloc[0]).shape == (112, 112, 3)


def test_run_build_rejects_prompts_without_placeholder(tmp_path):
    from facegen.core.config import load_preset
    from facegen.core.errors import ConfigError

    preset = load_preset("tiny", ["data.edit_prompts=[a chef]"])
    with pytest.raises(ConfigError, match="has no S"):
        run_build(preset, Storage.open(str(tmp_path)), ["X"], None, None)


def test_the_sdxl_entry_draws_the_set_with_the_sdxl_base(ray_cluster, load_job, tiny_build, tmp_path):
    """`--method dreamidentity-sdxl` (data.method): the same rows drawn by tiny:sdxl's own pipeline, so the pictures
    differ from the SD 2.1-drawn build's for the same subject, prompt and seed."""
    import numpy as np

    out = tmp_path / "xl"
    assert load_job("build_data").main(["--preset", "tiny", "--output", str(out), "--num-identities", "1",
                                        "--method", "dreamidentity-sdxl", *FAST]) == 0
    xl, sd = selfaug_rows(out), selfaug_rows(tiny_build)
    assert Storage.open(str(out)).read_json("manifest.json")["config"]["data"]["method"] == "dreamidentity-sdxl"
    assert len(xl) == 3 and set(xl["prompt"]) == set(sd["prompt"])
    row = xl.iloc[0]
    same = sd[(sd["subject"] == row["subject"]) & (sd["prompt_index"] == row["prompt_index"])].iloc[0]
    a, b = decode_image(row["edited_image"]), decode_image(same["edited_image"])
    assert a.shape == b.shape and np.abs(a.astype(float) - b.astype(float)).mean() > 1.0
