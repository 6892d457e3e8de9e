"""The service's plain parts without Ray: identity tokens, request grouping, the watermark and its CLI."""
import json
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
from facegen.cluster.serving import tokens, watermark
from facegen.cluster.serving.batching import GenerationJob, group_compatible
from facegen.core.control import Control
from facegen.core.plan import GenerationPlan


def make_job(prompt="S*", seed=0, num_images=1, steps=30, width=256, control=None, control_scale=1.0,
             control_end=1.0) -> GenerationJob:
    c = None if control is None else Control(image=[control], scale=control_scale, end=control_end)
    plan = GenerationPlan(steps=steps, guidance_scale=7.5, width=width, height=width, num_images=num_images, control=c)
    return GenerationJob(prompt=prompt, identity={}, seed=seed, plan=plan)


def test_token_round_trip_tampering_expiry_and_rotation():
    from facegen.core.errors import ConfigError

    keys = tokens.token_keys("k" * 32)
    arrays = {"id_tokens": np.arange(6, dtype=np.float32).reshape(2, 3) + 0.123}
    eid = "tiny:dreamidentity:fresh"
    token = tokens.seal(keys, "dreamidentity", eid, arrays)
    back = tokens.open_token(keys, token, "dreamidentity", eid)
    assert np.array_equal(back["id_tokens"], arrays["id_tokens"])
    # Opaque: neither the arrays nor the method can be read from the token without the key.
    raw = tokens._unb64(token.split(".")[1])
    assert arrays["id_tokens"].tobytes() not in raw and b"dreamidentity" not in raw and b"id_tokens" not in raw
    version, body = token.split(".")
    flipped = body[:-3] + ("A" if body[-3] != "A" else "B") + body[-2:]
    for bad, message in [(f"{version}.{flipped}", "altered"), ("garbage", "not a facegen"),
                         ("v1.abc.def", "not a facegen"), (token[:-8], "altered")]:
        with pytest.raises(tokens.BadToken, match=message):
            tokens.open_token(keys, bad, "dreamidentity", eid)
    with pytest.raises(tokens.BadToken, match="altered or issued by another service"):
        tokens.open_token(tokens.token_keys("o" * 32), token, "dreamidentity", eid)
    with pytest.raises(tokens.BadToken, match="method"):
        tokens.open_token(keys, token, "faceclip", eid)
    with pytest.raises(tokens.BadToken, match="another encoder"):
        tokens.open_token(keys, token, "dreamidentity", "tiny:dreamidentity:trained/model")
    with pytest.raises(tokens.BadToken, match="expired"):
        tokens.open_token(keys, tokens.seal(keys, "dreamidentity", eid, arrays, ttl_s=-1), "dreamidentity", eid)
    # Rotation: new key first; tokens sealed with the old one still open until it is dropped.
    rotated = tokens.token_keys("n" * 32 + "," + "k" * 32)
    assert np.array_equal(tokens.open_token(rotated, token, "dreamidentity", eid)["id_tokens"], arrays["id_tokens"])
    fresh = tokens.seal(rotated, "dreamidentity", eid, arrays)
    with pytest.raises(tokens.BadToken):
        tokens.open_token(keys, fresh, "dreamidentity", eid)  # made with the new key: the old set cannot open it
    with pytest.raises(ConfigError, match="shorter than 32 bytes"):
        tokens.token_keys("x")


def test_the_largest_identity_token_is_accepted_back():
    """The published FaceCLIP's identity (a row per branch: 2×512 and 2×144×768) sealed into a token that
    /v1/generate accepts as identity_token (the request's size limits let it through)."""
    from facegen.cluster.serving.api import GenerateRequest

    keys = tokens.token_keys("k" * 40)
    arrays = {"face_embedding": np.zeros((2, 512), np.float32), "face_tokens": np.zeros((2, 144, 768), np.float32)}
    token = tokens.seal(keys, "faceclip", "faceclip-official", arrays)
    req = GenerateRequest(method="faceclip", identity_token=token, prompt="a chef")
    opened = tokens.open_token(keys, req.identity_token, "faceclip", "faceclip-official")
    assert opened["face_tokens"].shape == (2, 144, 768) and len(token) > 1_000_000


def test_group_compatible_keeps_order_and_caps_images():
    def job(steps=30, n=1, w=256):
        return make_job(num_images=n, steps=steps, width=w)

    jobs = [job(), job(steps=10), job(n=2), job(w=512), job(steps=10), job(n=4)]
    groups = group_compatible(jobs, max_images=4)
    assert groups == [[0, 2], [1, 4], [3], [5]]
    assert sorted(i for g in groups for i in g) == list(range(len(jobs)))
    assert all(sum(jobs[i].num_images for i in g) <= 4 for g in groups)


def test_control_is_part_of_batch_compatibility():
    """Requests with control batch together only at the same strength and window (their images may differ); never
    with requests without control."""
    img = np.zeros((8, 8, 3), np.uint8)
    jobs = [make_job("a", 1), make_job("b", 2, control=img), make_job("c", 3, control=img + 1),
            make_job("d", 4, control=img, control_scale=0.5), make_job("e", 5, control=img, control_end=0.5),
            make_job("f", 6)]
    assert group_compatible(jobs, max_images=8) == [[0, 5], [1, 2], [3], [4]]


@pytest.mark.parametrize("fmt,quality", [("jpeg", 90), ("jpeg", 100), ("webp", 90)])
def test_every_output_format_carries_the_watermark_and_metadata(tmp_path, photos, fmt, quality):
    """JPEG (4:4:4 chroma, quality ≥ 90: the API's floor) and WebP (lossless) keep the chroma-borne mark; the metadata
    rides in EXIF; the `facegen watermark` command reads both, as for PNG."""
    img = np.asarray(PIL.Image.open(photos["astronaut"]).convert("RGB"))
    info = {"method": "faceclip", "seed": 5, "prompt": "un café à Paris"}  # non-ASCII survives the ASCII EXIF field
    path = tmp_path / f"out.{fmt}"
    path.write_bytes(watermark.encode_with_provenance(img, info, fmt, quality))
    with PIL.Image.open(path) as opened:
        assert opened.format == watermark.FORMATS[fmt]
    report = json.loads(subprocess.run([sys.executable, "-m", "facegen", "watermark", str(path)], capture_output=True,
                                       text=True, check=True).stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["watermarked"] and report["bit_agreement"] == 1.0 and report["metadata"] == info
    plain = tmp_path / f"plain.{fmt}"
    PIL.Image.fromarray(img).save(plain, format=watermark.FORMATS[fmt], quality=quality)
    assert not watermark.inspect(plain)["watermarked"] and watermark.inspect(plain)["metadata"] is None


def test_watermark_survives_png_round_trip_and_is_absent_from_plain_images(tmp_path, photos):
    img = PIL.Image.open(photos["astronaut"]).convert("RGB")
    marked = tmp_path / "marked.png"
    marked.write_bytes(watermark.encode_with_provenance(img, {"method": "dreamidentity", "seed": 3}, "png"))
    report = watermark.inspect(marked)
    assert report["watermarked"] and report["metadata"] == {"method": "dreamidentity", "seed": 3}
    resaved = tmp_path / "resaved.png"
    PIL.Image.open(marked).save(resaved)  # metadata dropped, pixels kept
    assert watermark.inspect(resaved)["watermarked"]
    plain = tmp_path / "plain.png"
    img.save(plain)
    assert not watermark.inspect(plain)["watermarked"]
    noise = tmp_path / "noise.png"
    PIL.Image.fromarray((np.random.RandomState(0).rand(300, 300, 3) * 255).astype(np.uint8)).save(noise)
    assert watermark.detect(PIL.Image.open(noise)) < 0.9
    with pytest.raises(ValueError, match="256"):
        watermark.embed(img.resize((128, 128)))

    def cli(*files):
        return subprocess.run([sys.executable, "-m", "facegen", "watermark", *map(str, files)], capture_output=True, text=True)

    found = cli(marked)
    assert found.returncode == 0 and '"watermarked": true' in found.stdout
    assert cli(plain).returncode == 1
    missing = cli(tmp_path / "nope.png")
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr


def test_a_failing_batch_is_retried_one_request_at_a_time():
    """An out-of-memory (or any model error) on a batch: the request that fails alone gets a 503-style error, the
    others in its batch are drawn."""
    from facegen.cluster.serving.batching import draw_groups
    from facegen.core.errors import GenerationFailed

    jobs = [make_job(p, i, num_images=2 if p == "big" else 1) for i, p in enumerate(["a", "big", "b"])]
    calls = []

    def draw(group):
        calls.append([j.prompt for j in group])
        if any(j.prompt == "big" for j in group):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return [f"{j.prompt}{n}" for j in group for n in range(j.num_images)]

    results = draw_groups(jobs, max_images=8, draw=draw)
    assert calls == [["a", "big", "b"], ["a"], ["big"], ["b"]]
    assert results[0] == (["a0"], 1) and results[2] == (["b0"], 1)
    assert isinstance(results[1], GenerationFailed) and results[1].code == "generation_failed"
    # Batch poisoning: a request only the model can refuse (S* past the tokenizer's 77 tokens) fails alone; the
    # requests batched with it are drawn.
    from facegen.core.errors import BadPrompt

    def poisoned(group):
        if any(j.prompt == "big" for j in group):
            raise BadPrompt("S* is past token 77")
        return [f"{j.prompt}{n}" for j in group for n in range(j.num_images)]

    results = draw_groups(jobs, 8, poisoned)
    assert results[0] == (["a0"], 1) and results[2] == (["b0"], 1) and isinstance(results[1], BadPrompt)


def test_an_encode_of_eight_40_mp_photos_holds_one_photo_at_a_time(photos):
    """The face replica's /v1/encode work on 8 photos of 40 MP (the most a request may send): each is decoded (in
    the sandbox), detected and reduced to its aligned crop before the next, so the replica's peak Python/numpy
    memory stays under 300 MB (the decode's own memory is the sandbox worker's, capped by RLIMIT_AS)."""
    import io
    import tracemalloc

    from facegen.cluster.serving.replicas import FaceEncoder

    big = PIL.Image.open(photos["astronaut"]).convert("RGB").resize((7300, 5470), PIL.Image.BILINEAR)
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=85)
    data = buf.getvalue()
    del big
    encoder = FaceEncoder.func_or_class("tiny", {"faceclip": None}, tokens.token_keys("k" * 32), 60.0)
    encoder.encode("faceclip", [data])  # warm: the models and the sandbox's worker are loaded once, not per request
    tracemalloc.start()
    try:
        out = encoder.encode("faceclip", [data] * 8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(out["faces"]) == 8 and out["identity_token"]
    assert peak < 300 * 2**20, f"peak {peak / 2**20:.0f} MB"
