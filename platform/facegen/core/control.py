"""Scene switch: where the person's head goes, and how it is turned — the control image a ControlNet reads.

A head box (x, y, w, h on the output canvas) and a pose — the five facial keypoints (eyes, nose, mouth corners) of
a face: the reference photo's, a separate pose photo's, or a frontal face — give a keypoint map: the face's
keypoints, placed so that the face's detected box lands on the head box, drawn in one of two styles:
  keypoints  InstantID's face-landmark rendering (coloured limbs from each keypoint to the nose, coloured dots);
  openpose   OpenPose's body rendering of the head (nose, eyes, ears, neck: the public OpenPose ControlNets').
A ready control image (OpenPose, depth, canny …) can be given instead. Plain PIL/numpy: no torch, no diffusers.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import PIL.Image
import PIL.ImageDraw

from facegen.core.errors import BadControl

RENDERS = ("keypoints", "openpose")
# A frontal face: ArcFace's five-point template in its 112×112 crop, the crop taken as the face box.
FRONTAL_KPS = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]], dtype=np.float32)
FRONTAL_BOX = np.array([0, 0, 112, 112], dtype=np.float32)
# InstantID's colours for left eye, right eye, nose, left and right mouth corner.
KPS_COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
# OpenPose's colours for the points it draws here (body indices 0 nose, 1 neck, 14/15 eyes, 16/17 ears) and for
# the limbs between them (its limb order: neck–nose, nose–r.eye, r.eye–r.ear, nose–l.eye, l.eye–l.ear).
OPENPOSE_POINT_COLORS = {"nose": (255, 0, 0), "neck": (255, 85, 0), "r_eye": (170, 0, 255), "l_eye": (255, 0, 255),
                         "r_ear": (255, 0, 170), "l_ear": (255, 0, 85)}
OPENPOSE_LIMBS = [("neck", "nose", (0, 0, 255)), ("nose", "r_eye", (85, 0, 255)), ("r_eye", "r_ear", (170, 0, 255)),
                  ("nose", "l_eye", (255, 0, 255)), ("l_eye", "l_ear", (255, 0, 170))]


@dataclass
class Control:
    """One request's control: the image the ControlNet reads and how strongly, over which part of denoising."""

    image: PIL.Image.Image
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0


@dataclass
class ControlPlan:
    """A request's scene switch once its rules are checked (`resolve`), before any image is made: a head box on the
    canvas (posed as `pose_image`'s face, else the face photo's, else frontal) or a ready control image, and the
    ControlNet's strength and window with the method's defaults filled in."""

    head_box: tuple[int, int, int, int] | None
    pose_image: object
    control_image: object
    scale: float
    start: float
    end: float


def resolve(config, width: int, height: int, head_box=None, pose_image=None, control_image=None,
            scale: float | None = None, start: float | None = None, end: float | None = None,
            names: dict[str, str] | None = None, key: str = "methods.<method>.controlnet") -> ControlPlan | None:
    """The rules of scene switch, for every entry point (the CLI, the HTTP ingress, the pipelines): None without
    control inputs; else exactly one of a head box (with an optional pose photo) and a control image, a ControlNet
    configured (`config`: the method's ControlNetConfig, `key` its preset key), the box on the width×height canvas,
    and the strength and window within bounds (the config's where not given). `names`: the inputs as the caller's
    user writes them (e.g. {"head_box": "--head-box"}), for the errors."""
    n = {"head_box": "head_box", "pose_image": "pose_image", "control_image": "control_image", **(names or {})}
    if head_box is None and control_image is None:
        if pose_image is not None:
            raise BadControl(f"{n['pose_image']} needs {n['head_box']}: the box on the output image where the head goes")
        return None
    if head_box is not None and control_image is not None:
        raise BadControl(f"give {n['head_box']} (with an optional {n['pose_image']}) or {n['control_image']}, not both")
    if not config.model:
        raise BadControl(f"no ControlNet is configured for this method, so {n['head_box']} / {n['control_image']} "
                         f"cannot be used: set {key}.model (a hub id or a local directory)")
    scale = config.scale if scale is None else float(scale)
    start = config.start if start is None else float(start)
    end = config.end if end is None else float(end)
    check_control_params(scale, start, end)
    box = check_head_box(head_box, width, height) if head_box is not None else None
    return ControlPlan(box, pose_image, control_image, scale, start, end)


def parse_head_box(text: str) -> tuple[int, int, int, int]:
    """"x,y,w,h" (the CLI's --head-box) → a tuple of ints."""
    try:
        values = tuple(int(round(float(v))) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise BadControl(f"head box '{text}': give x,y,w,h in pixels of the output image, e.g. 96,64,128,160")
    return values  # type: ignore[return-value]


def check_head_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """The box as ints, if it has a size and lies on the width×height canvas; a clear BadControl otherwise."""
    if box is None or len(box) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
        raise BadControl(f"head_box {box}: give four numbers x, y, w, h in pixels of the output image")
    x, y, w, h = (int(round(v)) for v in box)
    if w <= 0 or h <= 0:
        raise BadControl(f"head_box {list(box)}: width and height must be positive")
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise BadControl(f"head_box {list(box)} does not lie on the {width}×{height} image: it needs 0 ≤ x, 0 ≤ y, "
                        f"x + w ≤ {width}, y + h ≤ {height}")
    return x, y, w, h


def check_control_params(scale: float, start: float, end: float) -> None:
    if not (math.isfinite(scale) and 0 <= scale <= 4):
        raise BadControl(f"control_scale {scale}: use a number between 0 and 4 (1 is the ControlNet's full strength)")
    if not (0 <= start < end <= 1):
        raise BadControl(f"control_start {start}, control_end {end}: need 0 ≤ start < end ≤ 1 (fractions of the steps)")


def place_keypoints(kps: np.ndarray, face_box: np.ndarray, head_box) -> np.ndarray:
    """A face's 5×2 keypoints, moved and scaled so that its detected box lands on the head box."""
    x, y, w, h = head_box
    fx1, fy1, fx2, fy2 = (float(v) for v in face_box)
    scale = np.array([w / max(fx2 - fx1, 1e-6), h / max(fy2 - fy1, 1e-6)], dtype=np.float32)
    return (np.asarray(kps, np.float32) - [fx1, fy1]) * scale + [x, y]


def render_keypoints(width: int, height: int, kps: np.ndarray, style: str = "keypoints") -> PIL.Image.Image:
    """The keypoint map on a black width×height canvas, for keypoints already on that canvas (5×2)."""
    if style not in RENDERS:
        raise BadControl(f"control render '{style}': use one of {', '.join(RENDERS)}")
    img = PIL.Image.new("RGB", (width, height))
    draw = PIL.ImageDraw.Draw(img)
    kps = np.asarray(kps, np.float32)
    size = float(np.linalg.norm(kps[0] - kps[1]))  # the eye distance sets line widths and dot sizes
    if style == "keypoints":
        stick, radius = max(1, round(size * 0.12)), max(2, round(size * 0.12))
        for i in (0, 1, 3, 4):  # each keypoint to the nose, in the keypoint's colour dimmed
            color = tuple(int(c * 0.6) for c in KPS_COLORS[i])
            draw.line([tuple(kps[i]), tuple(kps[2])], fill=color, width=stick)
        for (px, py), color in zip(kps, KPS_COLORS):
            draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=color)
        return img
    points = openpose_head(kps)
    stick, radius = max(1, round(size * 0.1)), max(2, round(size * 0.08))
    for a, b, color in OPENPOSE_LIMBS:
        draw.line([tuple(points[a]), tuple(points[b])], fill=tuple(int(c * 0.6) for c in color), width=stick)
    for name, (px, py) in points.items():
        draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=OPENPOSE_POINT_COLORS[name])
    return img


def openpose_head(kps: np.ndarray) -> dict[str, np.ndarray]:
    """OpenPose's head points from the five face keypoints: eyes and nose as they are; each ear half an eye
    distance out along the eye line; the neck one and a half eyes-to-mouth distances below the mouth."""
    l_eye, r_eye, nose, mouth_l, mouth_r = (np.asarray(k, np.float32) for k in kps)
    across = r_eye - l_eye  # image-left eye → image-right eye
    eyes, mouth = (l_eye + r_eye) / 2, (mouth_l + mouth_r) / 2
    # In image terms the person's right eye is on the image's left (a camera facing them).
    return {"nose": nose, "r_eye": l_eye, "l_eye": r_eye, "r_ear": l_eye - 0.5 * across, "l_ear": r_eye + 0.5 * across,
            "neck": mouth + 1.5 * (mouth - eyes)}


def head_control_image(width: int, height: int, head_box, face=None, style: str = "keypoints") -> PIL.Image.Image:
    """The keypoint map for a head box: `face` = (kps 5×2, face box x1,y1,x2,y2) of the pose's photo, or None for a
    frontal face."""
    box = check_head_box(head_box, width, height)
    kps, face_box = (FRONTAL_KPS, FRONTAL_BOX) if face is None else (np.asarray(face[0]), np.asarray(face[1]))
    return render_keypoints(width, height, place_keypoints(kps, face_box, box), style)


class ControlImageResized(UserWarning):
    """A control image whose size differed from the canvas was resized to it."""


def fit_control_image(image: PIL.Image.Image, width: int, height: int) -> tuple[PIL.Image.Image, str | None]:
    """The control image at the canvas size, and a note saying so when it had to be resized."""
    image = image.convert("RGB")
    if image.size == (width, height):
        return image, None
    note = f"the control image ({image.width}×{image.height}) was resized to the {width}×{height} output"
    return image.resize((width, height), PIL.Image.BILINEAR), note


def resize_note(image: PIL.Image.Image, width: int, height: int) -> PIL.Image.Image:
    """fit_control_image for Python callers: the note is a ControlImageResized warning."""
    fitted, note = fit_control_image(image, width, height)
    if note:
        warnings.warn(note, ControlImageResized, stacklevel=3)
    return fitted


def box_iou(a, b) -> float:
    """Intersection over union of two x, y, w, h boxes."""
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0
