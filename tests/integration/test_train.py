"""jobs/train_m2.py, jobs/train_faceclip.py and jobs/train_facet5.py through their real entry points on a real local
Ray: overfitting with 2 DDP workers, FaceT5-FLUX with 2 DeepSpeed ZeRO-3 workers (the suite's one DeepSpeed run), a
killed worker and --resume (which must continue alike), export round trips and bad input."""
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from facegen.core.config import load_preset
from facegen.core.methods.dreamidentity.encoder import M2Encoder, with_token_dim

REPO = Path(__file__).resolve().parents[2]


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def latest_checkpoint(out: Path) -> Path:
    snapshot = json.loads((out / "checkpoints" / "run" / "checkpoint_manager_snapshot.json").read_text())
    name = snapshot["latest_checkpoint_result"]["checkpoint_dir_name"]
    return out / "checkpoints" / "run" / name


@pytest.fixture(scope="module")
def m2_run(train_data, load_job, tmp_path_factory):
    """2 DDP workers on the CPU overfit the 4 self-aug rows (fixed per-row noise, so the loss is a function of the
    weights)."""
    out = tmp_path_factory.mktemp("m2") / "run"
    rc = load_job("train_m2").main(["--data", str(train_data), "--output", str(out), "--num-workers", "2",
                                    "--max-steps", "10", "--set", "train.fixed_noise=true",
                                    "--set", "train.lr=1e-2", "--set", "train.ffhq_ratio=0"])
    assert rc == 0
    return out


def test_m2_loss_falls_with_two_ddp_workers(m2_run):
    curve = losses(m2_run)
    assert steps(m2_run) == list(range(1, 11))
    assert curve[-1] < curve[0] and min(curve[5:]) < min(curve[:2])
    manifest = json.loads((m2_run / "manifest.json").read_text())
    assert manifest["counts"] == {"steps": 10, "workers": 2} and manifest["resumed"] == 0
    assert (m2_run / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_m2_export_round_trip(m2_run, photos, analyzer):
    """The exported model = the checkpoint's trained weights (safetensors; frozen ViT weights are not stored), and
    the pipeline/CLI load it."""
    from facegen.cluster.train.strategies import DDPStrategy
    from facegen.core.methods.dreamidentity.pipeline import DreamIdentityPipeline

    consolidated = DDPStrategy.consolidate(str(latest_checkpoint(m2_run)))
    exported = M2Encoder.from_pretrained(m2_run / "model")
    assert any(k.startswith("projectors.") for k in consolidated)
    assert not any(k.startswith("vit.") and k.endswith("weight") for k in consolidated)
    exported_state = exported.state_dict()
    for key, value in consolidated.items():
        assert torch.equal(exported_state[key], value.float()), key
    config = with_token_dim(load_preset("tiny").method("dreamidentity").encoder, 32)
    face = analyzer.aligned(photos["astronaut"], 112)
    fresh = M2Encoder.from_config_random(config)
    assert not torch.allclose(fresh.encode_aligned(face), exported.encode_aligned(face))
    pipe = DreamIdentityPipeline.from_preset("tiny", model=m2_run / "model")
    assert torch.allclose(pipe.encode_identity(photos["astronaut"]).tokens, exported.encode_aligned(face)[0])


def test_faceclip_alignment_loss_falls_with_two_ddp_workers(train_data, load_job, tmp_path):
    out = tmp_path / "faceclip"
    rc = load_job("train_faceclip").main(["--data", str(train_data), "--output", str(out), "--num-workers", "2",
                                          "--max-steps", "8", "--set", "methods.faceclip.train.cond_dropout=0",
                                          "--set", "train.ffhq_ratio=0.5"])
    assert rc == 0
    curve = losses(out)
    assert len(curve) == 8 and curve[-1] < curve[0]
    from facegen.core.methods.faceclip.encoder import FaceCLIPEncoder
    from safetensors.torch import load_file

    encoder = FaceCLIPEncoder.from_pretrained(out / "model")
    state = load_file(latest_checkpoint(out) / "model.safetensors")  # the trained weights, no pickle
    exported = encoder.state_dict()
    assert state and all(k.startswith("encoder.") for k in state)
    for key, value in state.items():
        assert torch.equal(exported[key.removeprefix("encoder.")], value), key


def test_faceclip_diffusion_stage_fine_tunes_the_published_model_with_lora(train_data, load_job, official_checkpoint,
                                                                            tmp_path):
    """Fine-tuning from the converted official FaceCLIP (its encoder and its fine-tuned UNet), stage=diffusion,
    unet=lora, 2 DDP workers: the LoRA UNet runs inside the DDP forward and moves; the export carries the official
    encoder, the UNet it started from and the adapters, and the pipeline draws with all three."""
    import torch
    from facegen.core.methods import load_pipeline
    from facegen.core.methods.faceclip.official import OfficialFaceCLIPEncoder
    from facegen.core.methods.faceclip.pipeline import UNET
    from safetensors.torch import load_file

    out = tmp_path / "lora"
    rc = load_job("train_faceclip").main(["--data", str(train_data), "--output", str(out), "--num-workers", "2",
                                          "--max-steps", "3", "--set", f"methods.faceclip.model={official_checkpoint['model']}",
                                          "--set", "methods.faceclip.train.stage=diffusion",
                                          "--set", "methods.faceclip.train.align_weight=0",
                                          "--set", "methods.faceclip.train.unet=lora", "--set", "train.lr=1e-2"])
    assert rc == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert [r["step"] for r in rows] == [1, 2, 3] and all("mse" in r for r in rows)
    lora = load_file(out / "model" / UNET.lora_dir / UNET.lora_file)
    ups = [v for k, v in lora.items() if "lora_B" in k]
    assert ups and any(v.abs().sum() > 0 for v in ups)  # peft starts lora_B at zero: training moved it
    pipe = load_pipeline("faceclip", load_preset("tiny"), out / "model")
    assert isinstance(pipe.faceclip_encoder, OfficialFaceCLIPEncoder)
    assert any("lora" in name for name, _ in pipe.unet.named_parameters())
    torch.testing.assert_close(pipe.unet.conv_out.bias, official_checkpoint["unet_state"]["conv_out.bias"])


def _train_worker_pids() -> list[int]:
    """Ray names each actor process after its class: Ray Train's workers are "ray::RayTrainWorker…"."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith("ray::RayTrainWorker"):
            pids.append(proc.pid)
    return pids


# 2 DDP workers with random noise and timesteps, one row per batch: 2 batches per worker per epoch, and a checkpoint
# every 3 steps, so runs stop and restart mid-epoch. The same arguments for every run below, whatever interrupts it.
RESTART_ARGS = ["--num-workers", "2", "--max-steps", "16", "--set", "train.batch_size=1",
                "--set", "train.checkpoint_every=3", "--set", "train.max_failures=2", "--set", "train.ffhq_ratio=0",
                "--set", "train.lr=1e-2"]


@pytest.fixture(scope="module")
def restarted_run(train_data, load_job, tmp_path_factory):
    """A run with one of its 2 DDP workers SIGKILLed after the first checkpoint: Ray Train restarts the group from
    that checkpoint (FailureConfig) and every worker restores its data position and random generators."""
    out = tmp_path_factory.mktemp("restarted") / "run"
    result = {}
    argv = ["--data", str(train_data), "--output", str(out), *RESTART_ARGS]
    job = threading.Thread(target=lambda: result.update(rc=load_job("train_m2").main(argv)))
    job.start()
    deadline, killed = time.time() + 300, None
    # A checkpoint counts once the controller has registered it (its snapshot names it), not when files appear.
    snapshot = out / "checkpoints" / "run" / "checkpoint_manager_snapshot.json"
    while time.time() < deadline and job.is_alive() and killed is None:
        if snapshot.exists() and _train_worker_pids():
            killed = _train_worker_pids()[-1]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.1)
    job.join(600)
    assert killed is not None, "no checkpoint appeared before the run ended"
    assert result["rc"] == 0
    return out


def test_killed_worker_resumes_from_checkpoint(restarted_run):
    """The restarted run finishes with one continuous step series."""
    manifest = json.loads((restarted_run / "manifest.json").read_text())
    assert manifest["resumed"] >= 1 and manifest["counts"]["steps"] == 16
    assert steps(restarted_run) == list(range(1, 17))  # steps before the checkpoint kept, lost ones redone, none twice
    history = [json.loads(line) for line in (restarted_run / "metrics.jsonl").read_text().splitlines()]
    resumed_at = [h["step"] for h in history if h.get("event") == "resumed"]
    assert resumed_at and all(s % 3 == 0 and 0 < s < 16 for s in resumed_at)
    state = torch.load(latest_checkpoint(restarted_run) / "optimizer.pt", weights_only=True)  # loads without pickle
    assert state["scheduler"]["last_epoch"] == 16


def test_stopped_and_resumed_run_equals_the_restarted_one(restarted_run, train_data, load_job, s3_endpoint):
    """The same run stopped mid-epoch at step 15 (its checkpoints on S3) and continued with --resume draws the same
    batches, noise and timesteps as the run restarted after its killed worker: the loss curves and the trained weights
    are the same. The two continue from different checkpoints (15 here, the first one after the kill there), so a restore
    that lost any state would set them apart."""
    import boto3
    from facegen.cluster.data.storage import Storage

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="facegen-resume")
    job = load_job("train_m2")
    common = ["--data", str(train_data), *RESTART_ARGS]
    parted = "s3://facegen-resume/run"
    assert job.main([*common, "--output", parted, "--max-steps", "15"]) == 0
    assert job.main([*common, "--output", parted]) == 2  # an existing run is not overwritten
    assert job.main([*common, "--output", parted, "--resume"]) == 0

    storage = Storage.open(parted)
    rows = [json.loads(line) for line in storage.read_bytes(storage.path("metrics.jsonl")).decode().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == steps(restarted_run) == list(range(1, 17))
    assert [r["step"] for r in rows if r.get("event") == "resumed"] == [15]
    assert torch.allclose(torch.tensor([r["loss"] for r in rows if "loss" in r]), torch.tensor(losses(restarted_run)),
                          rtol=1e-5, atol=1e-6)
    assert storage.read_json("manifest.json")["resumed"] == 1
    with Storage.open(f"{parted}/model").local_copy() as model_dir:
        resumed = M2Encoder.from_pretrained(model_dir).state_dict()
    restarted = M2Encoder.from_pretrained(restarted_run / "model").state_dict()
    assert resumed.keys() == restarted.keys()
    for key, value in restarted.items():
        assert torch.allclose(resumed[key], value, rtol=1e-5, atol=1e-6), key


def test_a_declared_gpu_that_cuda_cannot_see_trains_on_cpu(train_data, load_job, tmp_path):
    """This cluster declares one GPU that CUDA does not see: a one-worker run (one GPU per worker, on paper) must
    notice and train on the CPU with gloo, not fail setting up NCCL; its manifest says where it trained."""
    out = tmp_path / "declared_gpu"
    assert load_job("train_faceclip").main(["--data", str(train_data), "--output", str(out), "--num-workers", "1",
                                            "--max-steps", "2", "--set", "train.ffhq_ratio=0.5"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["use_gpu"] is False and manifest["counts"] == {"steps": 2, "workers": 1}


def test_bad_data_is_refused_before_any_worker(train_data, load_job, tmp_path, capsys):
    import pyarrow.parquet as pq

    broken = tmp_path / "broken" / "selfaug"
    broken.mkdir(parents=True)
    table = pq.read_table(next((train_data / "selfaug").glob("*.parquet"))).drop_columns(["edited_image"])
    pq.write_table(table, broken / "part-0.parquet")
    job = load_job("train_faceclip")
    cases = [(tmp_path / "nothing", "no such directory"), (tmp_path, "holds no selfaug"),
             (broken.parent, "lacks the column(s) edited_image")]
    for i, (data, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        start = time.time()
        assert job.main(["--data", str(data), "--output", str(out)]) == 2
        assert message in capsys.readouterr().err
        assert time.time() - start < 20 and not (out / "checkpoints").exists()
    assert job.main(["--data", str(train_data), "--output", str(tmp_path / "o"), "--set", "methods.faceclip.train.stage=both"]) == 2
    assert "methods.faceclip.train.stage" in capsys.readouterr().err


FACET5_ARGS = ["--num-workers", "2", "--strategy", "deepspeed", "--set", "train.deepspeed_stage=3",
               "--max-steps", "6", "--set", "train.fixed_noise=true", "--set", "train.lr=1e-2",
               "--set", "train.ffhq_ratio=0", "--set", "methods.facet5.train.cond_dropout=0",
               "--set", "train.checkpoint_every=3"]


def test_facet5_fine_tunes_under_zero3_resumes_and_exports(train_data, load_job, photos, tmp_path):
    """jobs/train_facet5.py: 2 DeepSpeed ZeRO-3 workers (parameters sharded over the ranks, as a 12 B DiT must be)
    train the LoRA adapters and the fuser with the flow-matching loss, which falls; the same run stopped at step 3 and
    continued with --resume equals the uninterrupted one; the export loads in the pipeline, its adapters on the DiT."""
    from facegen.core.methods import load_pipeline
    from facegen.core.methods.facet5.encoder import FaceT5FluxEncoder
    from safetensors.torch import load_file

    job = load_job("train_facet5")
    whole, parted = tmp_path / "whole", tmp_path / "parted"
    assert job.main(["--data", str(train_data), "--output", str(whole), *FACET5_ARGS]) == 0
    curve = losses(whole)
    assert steps(whole) == list(range(1, 7)) and curve[-1] < curve[0]
    assert job.main(["--data", str(train_data), "--output", str(parted), *FACET5_ARGS, "--max-steps", "3"]) == 0
    assert job.main(["--data", str(train_data), "--output", str(parted), *FACET5_ARGS, "--resume"]) == 0
    assert steps(parted) == list(range(1, 7))
    assert torch.allclose(torch.tensor(losses(parted)), torch.tensor(curve), rtol=1e-5, atol=1e-6)
    a, b = (FaceT5FluxEncoder.from_pretrained(d / "model").state_dict() for d in (whole, parted))
    for key, value in a.items():
        assert torch.allclose(b[key], value, rtol=1e-5, atol=1e-6), key
    # Ray Train's checkpoint holds one ZeRO shard per rank; merged, the trained weights are the export's
    from facegen.cluster.train.strategies import DeepSpeedStrategy

    ckpt = latest_checkpoint(whole)
    assert len(list(ckpt.glob("zero/*optim_states.pt"))) == 2
    trained = DeepSpeedStrategy.consolidate(str(ckpt))
    assert any(".fuser." in k for k in trained) and any("lora_" in k for k in trained)
    assert not any(".t5_encoder." in k for k in trained)  # frozen parts are rebuilt, not stored
    for key, value in trained.items():
        if key.startswith("encoder."):
            assert torch.equal(a[key.removeprefix("encoder.")], value), key
    fresh = load_pipeline("facet5", "tiny")
    pipe = load_pipeline("facet5", "tiny", model=whole / "model")
    key = "encoder_2.fuser.encoder.text_layers.0.linear1.weight"
    assert not torch.allclose(fresh.facet5_encoder.state_dict()[key], a[key])  # the fuser trained
    adapters = load_file(str(whole / "model" / "transformer_lora" / "pytorch_lora_weights.safetensors"))
    assert adapters and all("lora_" in k for k in adapters)
    loaded = {k: v for k, v in pipe.transformer.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(adapters)
    image = pipe("a woman in a forest", face_image=photos["astronaut"], num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 96, 128, 3)


def test_m2_on_sdxl_trains_through_train_m2_and_draws_from_the_cli(train_data, load_job, photos, tmp_path):
    """`train_m2.py --method dreamidentity-sdxl`: M² trained against the frozen SDXL base (S* in both towers), its
    export loaded by `python -m facegen generate --method dreamidentity-sdxl --model`, and the export is the one the
    pipeline uses (its face encoder gives the tokens the exported M² writes)."""
    from facegen.cli import main
    from facegen.core.methods import load_pipeline

    out = tmp_path / "m2_sdxl"
    assert load_job("train_m2").main(["--method", "dreamidentity-sdxl", "--data", str(train_data), "--output", str(out),
                                      "--num-workers", "1", "--max-steps", "3"]) == 0
    assert all(math.isfinite(x) for x in losses(out)) and steps(out)[-1] == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["args"]["method"] == "dreamidentity-sdxl"
    fresh = load_pipeline("dreamidentity-sdxl", "tiny").encode_identity(photos["astronaut"]).tokens
    trained = load_pipeline("dreamidentity-sdxl", "tiny", model=str(out / "model")).encode_identity(photos["astronaut"])
    assert trained.tokens.shape == fresh.shape and (trained.tokens - fresh).abs().max() > 1e-6
    picture = tmp_path / "xl.png"
    assert main(["generate", "--method", "dreamidentity-sdxl", "--model", str(out / "model"), "--face",
                 str(photos["astronaut"]), "--prompt", "S* as a chef", "--out", str(picture), "--steps", "2"]) == 0
    assert picture.is_file()
