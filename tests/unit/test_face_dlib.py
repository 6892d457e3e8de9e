"""The license-clean face stack (face.model: dlib) on real photos: detection, landmarks in ArcFace's convention,
identity by dlib's metric, weights checked before they load, and the profile's refusals."""
import json
import shutil

import numpy as np
import pytest
from facegen.core.errors import ConfigError, ModelNotFound
from facegen.core.face.config import FaceAnalyzerConfig


@pytest.fixture(scope="module")
def dlib_analyzer():
    from facegen.core.face.analyzer import FaceAnalyzer

    return FaceAnalyzer(FaceAnalyzerConfig(model="dlib"))


def test_finds_the_faces_of_real_photos(dlib_analyzer, photos):
    assert len(dlib_analyzer.detect(photos["astronaut"])) >= 1
    group = dlib_analyzer.detect(photos["group"], embed="all")
    assert len(group) == 6
    assert all(f.embedding.shape == (128,) for f in group)  # raw descriptors: dlib's metric is Euclidean
    assert len(dlib_analyzer.detect(photos["tom_hanks"])) == 1  # an aligned 112 crop
    assert dlib_analyzer.detect(photos["no_face"]) == []


def test_landmarks_follow_arcface_convention(dlib_analyzer, analyzer, photos):
    """The calibrated fit puts ArcFace's five points where SCRFD puts them: 4–5 px on the 112 crop on average (a
    turned head more: its three points cannot say how far it turned)."""
    from facegen.core.face.align import ARCFACE_TEMPLATE, alignment_matrix

    errors = []
    for name in ("astronaut", "group"):
        theirs = analyzer.detect(photos[name], embed="none")
        for face in dlib_analyzer.detect(photos[name], embed="none"):
            centre = face.kps.mean(0)
            match = min(theirs, key=lambda f: np.linalg.norm(f.kps.mean(0) - centre))
            if np.linalg.norm(match.kps.mean(0) - centre) > 0.3 * (face.bbox[2] - face.bbox[0]):
                continue  # a face only one detector finds (HOG's faint one on the astronaut's suit patch)
            m = alignment_matrix(match.kps)  # SCRFD's crop
            ours_on_crop = face.kps @ m[:, :2].T + m[:, 2]
            errors.append(np.linalg.norm(ours_on_crop - ARCFACE_TEMPLATE, axis=1).mean())
    assert len(errors) == 7 and np.mean(errors) < 5.5 and max(errors) < 11, errors


def test_the_same_person_in_another_photo_ranks_first(dlib_analyzer, photos):
    """Yao Ming's portrait against the sixteen faces of his team's photo: his own face there is the nearest."""
    yao = dlib_analyzer.face_embedding(photos["yao"])
    team = dlib_analyzer.detect(photos["team"], embed="all")
    assert len(team) >= 12
    sims = dlib_analyzer.metric.similarity_matrix(yao, np.stack([f.embedding for f in team]))[0]
    best = team[int(np.argmax(sims))]
    assert 700 < best.bbox[0] < 780 and best.bbox[1] < 220  # No. 13, back row
    assert sims.max() > dlib_analyzer.metric.same_person  # dlib's 0.6 distance


def test_an_aligned_crop_embeds_close_to_its_photo(dlib_analyzer, photos):
    rgb, face = dlib_analyzer.largest(photos["astronaut"])
    for size in (112, 224):
        crop = dlib_analyzer.aligned(rgb, size)
        sim = dlib_analyzer.metric.similarity(dlib_analyzer.embed_aligned([crop])[0], face.embedding)
        assert sim > 0.75  # distance < 0.25: well inside the same-person 0.6


def test_a_tight_crop_found_on_the_padded_retry_embeds_as_its_photo(dlib_analyzer, photos):
    """A face cropped too tightly for HOG is found on the padded retry; its own landmarks come back to the crop's
    coordinates with the box, so the recognizer reads the face, not the padding."""
    from facegen.core.face.images import load_image

    rgb = load_image(photos["astronaut"])
    full = dlib_analyzer.detect(rgb)[0]
    x1, y1, x2, y2 = full.bbox.astype(int)
    crop = np.ascontiguousarray(rgb[y1 + 10:y2 - 10, x1 + 10:x2 - 10])
    assert dlib_analyzer.backend.detect(crop) == []  # too tight for HOG as it is
    (face,) = dlib_analyzer.detect(crop)
    assert dlib_analyzer.metric.similarity(face.embedding, full.embedding) > 0.6


def test_metric_is_dlibs_distance():
    from facegen.core.face.registry import face_metric

    m = face_metric(FaceAnalyzerConfig(model="dlib"))
    a, b = np.zeros(128, np.float32), np.full(128, 0.05, np.float32)
    assert m.dim == 128 and m.similarity(a, b) == pytest.approx(1 - np.linalg.norm(b), abs=1e-6)
    assert m.similarity(b, b) == 1.0 and m.same_person == pytest.approx(0.4)
    assert np.allclose(m.mean(np.stack([a, b])), b / 2)  # no normalisation
    assert face_metric(FaceAnalyzerConfig()).dim == 512


def test_weights_are_verified_and_only_the_cc0_files_are_named(tmp_path):
    """A changed weight file is refused before dlib parses it; the directory's 68-point file is never named."""
    from facegen.core.face.analyzer import FaceAnalyzer
    from facegen.core.face.dlib_backend import PREDICTOR, RECOGNIZER, DlibBackend

    files = DlibBackend(FaceAnalyzerConfig(model="dlib")).model_files()
    assert [f.name for f in files] == [PREDICTOR, RECOGNIZER]
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    with open(tmp_path / PREDICTOR, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff\xfe")
    analyzer = FaceAnalyzer(FaceAnalyzerConfig(model="dlib", root=str(tmp_path)))
    with pytest.raises(ModelNotFound, match="does not match the pin"):
        analyzer.detect(np.zeros((64, 64, 3), np.uint8))
    (tmp_path / RECOGNIZER).unlink()
    with pytest.raises(ModelNotFound, match=RECOGNIZER):
        FaceAnalyzer(FaceAnalyzerConfig(model="dlib", root=str(tmp_path))).detect(np.zeros((64, 64, 3), np.uint8))


def test_faceclip_follows_the_face_stack_and_refuses_what_it_cannot_read(tmp_path):
    from facegen.core.config import load_preset

    assert load_preset("tiny-open").method("faceclip").encoder.face_embedding_dim == 128
    assert load_preset("tiny").method("faceclip").encoder.face_embedding_dim == 512
    section, dlib = load_preset("tiny").method("faceclip"), FaceAnalyzerConfig(model="dlib")
    export = tmp_path / "ours"
    export.mkdir()
    (export / "config.json").write_text(json.dumps({"_class_name": "FaceCLIPEncoder", "face_embedding_dim": 512}))
    section.check_model(str(export), FaceAnalyzerConfig())  # its own stack: fine
    with pytest.raises(ConfigError, match="reads 512-d face embeddings, but face.model=dlib gives 128-d"):
        section.check_model(str(export), dlib)
    official = tmp_path / "official"
    official.mkdir()
    (official / "config.json").write_text(json.dumps({"_class_name": "OfficialFaceCLIPEncoder"}))
    with pytest.raises(ConfigError, match="insightface-profile only"):
        section.check_model(str(official), dlib)
    # FaceT5 on a real base model is ByteDance's encoder; a fine-tune of a conversion keeps its sources.json
    with pytest.raises(ConfigError, match="insightface-profile only"):
        load_preset("facet5-flux").method("facet5").check_model(None, dlib)
    (export / "sources.json").write_text("{}")
    with pytest.raises(ConfigError, match="converted from published weights"):
        load_preset("tiny").method("dreamidentity").check_model(str(export), dlib)
    # an export's config.json that is not JSON: one error naming the file, from the check and from the loader alike
    from facegen.core.errors import ModelNotFound
    from facegen.core.methods.faceclip.encoder import architecture_of

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelNotFound, match="config.json cannot be read as an export's config"):
        section.check_model(str(broken), dlib)
    with pytest.raises(ModelNotFound, match="config.json cannot be read as an export's config"):
        architecture_of(broken)
