"""The service's plain parts without Ray: identity tokens, request grouping, the watermark and its CLI."""
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
from facegen.serving import tokens, watermark
from facegen.serving.batching import GenerationJob, group_compatible


def test_token_round_trip_and_tampering():
    key = b"k" * 32
    arrays = {"tokens": np.arange(6, dtype=np.float32).reshape(2, 3)}
    token = tokens.sign(key, "dreamidentity", "tiny:dreamidentity:preset", arrays)
    back = tokens.verify(key, token, "dreamidentity", "tiny:dreamidentity:preset")
    assert np.array_equal(back["tokens"], arrays["tokens"])
    body, mac = token.split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    for bad, message in [(f"{flipped}.{mac}", "signature"), ("garbage", "not a facegen"), (token + "x", "signature")]:
        with pytest.raises(tokens.BadToken, match=message):
            tokens.verify(key, bad, "dreamidentity", "tiny:dreamidentity:preset")
    with pytest.raises(tokens.BadToken, match="signature"):
        tokens.verify(b"other" * 8, token, "dreamidentity", "tiny:dreamidentity:preset")
    with pytest.raises(tokens.BadToken, match="method"):
        tokens.verify(key, token, "faceclip", "tiny:dreamidentity:preset")
    with pytest.raises(tokens.BadToken, match="another encoder"):
        tokens.verify(key, token, "dreamidentity", "tiny:dreamidentity:/trained/model")


def test_group_compatible_keeps_order_and_caps_images():
    def job(steps=30, n=1, w=256):
        return GenerationJob(prompt="S*", identity={}, seed=0, num_images=n, steps=steps, width=w, height=w)

    jobs = [job(), job(steps=10), job(n=2), job(w=512), job(steps=10), job(n=4)]
    groups = group_compatible(jobs, max_images=4)
    assert groups == [[0, 2], [1, 4], [3], [5]]
    assert sorted(i for g in groups for i in g) == list(range(len(jobs)))
    assert all(sum(jobs[i].num_images for i in g) <= 4 for g in groups)


def test_watermark_survives_png_round_trip_and_is_absent_from_plain_images(tmp_path, photos):
    img = PIL.Image.open(photos["astronaut"]).convert("RGB")
    marked = tmp_path / "marked.png"
    marked.write_bytes(watermark.png_with_provenance(img, {"method": "dreamidentity", "seed": 3}))
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

    assert cli(marked).returncode == 0 and '"watermarked": true' in cli(marked).stdout
    assert cli(plain).returncode == 1
    missing = cli(tmp_path / "nope.png")
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr
