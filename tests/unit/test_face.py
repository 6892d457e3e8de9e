import io

import numpy as np
import pytest
from facegen.core.errors import ImageTooLarge, InvalidImage, NoFaceFound
from facegen.core.face.align import ARCFACE_TEMPLATE, align_face
from facegen.core.face.analyzer import cosine
from facegen.core.face.images import load_image
from PIL import Image


def test_group_photo_has_six_faces(analyzer, photos):
    faces = analyzer.detect(photos["group"], embed="all")
    assert len(faces) == 6
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)  # largest first
    assert all(f.embedding.shape == (512,) and abs(np.linalg.norm(f.embedding) - 1) < 1e-4 for f in faces)
    assert analyzer.detect(photos["group"])[1].embedding is None  # by default only the largest is embedded


def test_astronaut_has_one_face(analyzer, photos):
    assert len(analyzer.detect(photos["astronaut"])) == 1


def test_pre_aligned_crop_is_found(analyzer, photos):
    faces = analyzer.detect(photos["tom_hanks"])
    assert len(faces) == 1
    assert faces[0].bbox[0] > -20 and faces[0].bbox[2] < 132  # back in the crop's own coordinates


def test_same_person_beats_different_people(analyzer, photos):
    rgb = load_image(photos["astronaut"])
    flipped = Image.fromarray(rgb[:, ::-1]).resize((rgb.shape[1] * 3 // 4, rgb.shape[0] * 3 // 4))
    a, b = analyzer.face_embedding(rgb), analyzer.face_embedding(flipped)
    group = [f.embedding for f in analyzer.detect(photos["group"], embed="all")]
    same = cosine(a, b)
    different = max(cosine(a, g) for g in group)
    strangers = max(cosine(group[i], group[j]) for i in range(6) for j in range(i + 1, 6))
    assert same > 0.6 and same > different + 0.3 and same > strangers + 0.3


def test_several_photos_give_the_normalised_mean(analyzer, photos):
    rgb = load_image(photos["astronaut"])
    a, b = analyzer.face_embedding(rgb), analyzer.face_embedding(rgb[:, ::-1])
    mean = analyzer.face_embedding([rgb, rgb[:, ::-1]])
    expected = (a + b) / np.linalg.norm(a + b)
    assert np.allclose(mean, expected, atol=1e-5) and abs(np.linalg.norm(mean) - 1) < 1e-5


def test_alignment_puts_landmarks_on_the_template(analyzer, photos):
    rgb, face = analyzer.largest(photos["astronaut"])
    crop = align_face(rgb, face.kps, 112)
    assert crop.shape == (112, 112, 3)
    from insightface.utils.face_align import norm_crop

    reference = norm_crop(rgb, face.kps, 112)  # insightface's own ArcFace alignment
    assert np.abs(crop.astype(int) - reference.astype(int)).mean() < 1.0
    again = analyzer.detect(crop)[0]
    assert np.abs(again.kps[:2] - ARCFACE_TEMPLATE[:2]).max() < 4  # the eyes sit on the template
    big = align_face(rgb, face.kps, 512, margin=0.5)
    assert big.shape == (512, 512, 3)
    assert cosine(analyzer.detect(big)[0].embedding, face.embedding) > 0.7


def test_no_face_is_a_clear_error(analyzer, photos):
    with pytest.raises(NoFaceFound, match="no face found"):
        analyzer.face_embedding(photos["no_face"])


def test_bad_images(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    for bad in (junk, tmp_path / "missing.jpg", b"\x89PNG\r\n\x1a\n broken", np.zeros((4, 4, 7)), 42):
        with pytest.raises(InvalidImage):
            load_image(bad)
    assert load_image(np.zeros((20, 30), np.uint8)).shape == (20, 30, 3)


def test_hostile_images_are_refused_clearly_and_cheaply(analyzer):
    """Attacks on the decoder and the detector: rare Pillow formats, more than 40 MP, strips whose padded retry once
    asked for ~10 GB, and landmarks on top of each other — each a FacegenError (a 4xx), never a 5xx or a blow-up."""
    import io
    import resource

    from facegen.core.errors import ImageTooLarge, NoFaceFound
    from facegen.core.face.align import align_face
    from PIL import Image

    def encoded(img, fmt):
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        return buf.getvalue()

    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    for fmt in ("GIF", "TIFF", "ICO"):  # decoders facegen does not expose to user bytes
        with pytest.raises(InvalidImage, match="JPEG, PNG or WebP"):
            load_image(encoded(grey, fmt))
    huge = encoded(Image.new("L", (8000, 5001)), "PNG")  # 40 MP of grey: a few kB on the wire
    with pytest.raises(ImageTooLarge) as err:
        load_image(huge)
    assert err.value.code == "too_large"
    with pytest.raises(InvalidImage, match="elongated"):
        load_image(encoded(Image.new("L", (100_000, 8)), "PNG"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for width in (8_000, 16_000):  # 8:1 is retried padded (shrunk first), 16:1 is not retried at all
        assert analyzer.detect(np.full((1000, width, 3), 128, np.uint8)) == []
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 600, f"detection on 8-16 MP strips grew the process by {grown_mb:.0f} MB"  # unbounded: ~10 GB
    with pytest.raises(NoFaceFound, match="degenerate"):
        align_face(np.zeros((100, 100, 3), np.uint8), np.full((5, 2), 50.0), 112)


def test_jpeg_scan_bomb_is_refused_before_decoding(scan_bomb):
    import time

    from facegen.core.face.images import MAX_JPEG_SCANS, jpeg_scans

    bomb = scan_bomb(2000)
    assert jpeg_scans(bomb) > 2000
    start = time.perf_counter()
    with pytest.raises(InvalidImage, match=f"more than {MAX_JPEG_SCANS} scans"):
        load_image(bomb)
    assert time.perf_counter() - start < 2  # refused from the markers, not after decoding (minutes of CPU)
    ordinary = scan_bomb(0)  # a real progressive JPEG (Pillow's, ~10 scans) still decodes
    assert load_image(ordinary).shape == (256, 256, 3)


def test_malformed_exif_is_ignored_never_an_error(exif_fuzz):
    """Fuzzed EXIF blocks in PNG, WebP and JPEG files: the image loads (as stored) or is refused as invalid — never
    another exception (which the service would answer with a 5xx)."""
    from PIL import Image

    outcomes = {"loaded": 0, "invalid": 0}
    for data in exif_fuzz(Image.new("RGB", (32, 24), (200, 100, 50)), 300, seed=0):
        try:
            assert load_image(data).ndim == 3
            outcomes["loaded"] += 1
        except InvalidImage:
            outcomes["invalid"] += 1
    assert outcomes["loaded"] > 0


def test_a_grid_of_faces_runs_the_recognizer_once(analyzer, photos):
    """Face-grid amplification: a photo of hundreds of faces is detected (capped) but only its largest face is
    embedded."""
    from facegen.core.face.analyzer import MAX_FACES
    from PIL import Image

    face = np.asarray(Image.open(photos["tom_hanks"]).convert("RGB").resize((48, 48)))
    grid = np.tile(np.pad(face, ((8, 8), (8, 8), (0, 0)), constant_values=255), (12, 12, 1))  # 144 faces
    rec = analyzer.backend.app.models["recognition"]
    calls = []
    original = rec.get_feat
    rec.get_feat = lambda imgs: calls.append(len(imgs)) or original(imgs)
    try:
        faces = analyzer.detect(grid)
    finally:
        rec.get_feat = original
    assert len(analyzer._detect(grid)) == 144 and len(faces) == MAX_FACES  # every face found, the largest 32 kept
    assert calls == [1] and faces[0].embedding is not None and all(f.embedding is None for f in faces[1:])
    # the embedding is the same the full insightface pipeline gives for that face
    ours = analyzer.detect(photos["astronaut"])[0]
    (theirs,) = analyzer.backend.app.get(np.ascontiguousarray(np.asarray(Image.open(photos["astronaut"]).convert("RGB"))[..., ::-1]))
    assert abs(float(ours.embedding @ theirs.normed_embedding) - 1) < 1e-4
    np.testing.assert_allclose(ours.kps, theirs.kps, atol=1e-3)


def test_every_kind_of_decoder_bomb_is_refused_fast(decoder_bombs):
    """The class, not the instance: each kind is refused in under 3 s, by the cheap checks (format, pixel cap, a
    marker walk that knows TEM, RST, SOI/EOI and reads every frame of an MPO)."""
    import time

    from facegen.core.face.images import MAX_JPEG_SCANS, jpeg_scans

    bombs = decoder_bombs
    for kind in ("scans", "tem", "mpo"):
        assert jpeg_scans(bombs[kind]) > MAX_JPEG_SCANS, kind
    for kind, data in bombs.items():
        start = time.perf_counter()
        with pytest.raises((InvalidImage, ImageTooLarge)):
            load_image(data, name=f"the {kind} bomb")
        assert time.perf_counter() - start < 3, kind


def test_a_decode_over_its_cpu_budget_is_killed_in_the_sandbox_and_the_pool_recovers(photos):
    """What passes the cheap checks still decodes in a child process under a CPU-time limit: a progressive JPEG of
    36 MP and 63 scans (under the scan cap) costs ~1.8 CPU s; with a 0.5 s budget its worker is killed and replaced,
    the caller gets one InvalidImage, and the next photo decodes — its CPU seconds, reported by the child, small."""
    import time

    from facegen.core.face.images import jpeg_scans
    from facegen.core.face.sandbox import DecodePool, SandboxLimits
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (6000, 6000), 128).save(buf, format="JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    last_sos, eoi = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    heavy = data[:eoi] + data[last_sos:eoi] * (63 - jpeg_scans(data)) + data[eoi:]
    pool = DecodePool(SandboxLimits(workers=1, cpu_seconds=0.5))
    try:
        good = pool.decode(photos["astronaut"].read_bytes(), "face_image", 40_000_000)
        assert good.rgb.shape == (512, 512, 3) and good.cpu_seconds < 0.5
        first = pool._idle[0].process.pid
        start = time.perf_counter()
        with pytest.raises(InvalidImage, match="control_image could not be decoded within 0.5 s of CPU"):
            pool.decode(heavy, "control_image", 40_000_000)
        assert time.perf_counter() - start < 1.5 and not pool._idle  # killed at its budget, not after the decode
        again = pool.decode(photos["astronaut"].read_bytes(), "face_image", 40_000_000)
        assert np.array_equal(again.rgb, good.rgb) and pool._idle[0].process.pid != first
    finally:
        pool.close()
