"""The evaluation protocol's pieces without Ray: scoring real photos, the no-face accounting, the prompt list."""
import math

import numpy as np
import pytest
from facegen.cluster.eval.metrics import ImageScore, face_similarities, summarize
from facegen.cluster.eval.report import LABEL_HEIGHT, face_grid
from facegen.core.config import load_preset
from facegen.core.config.eval import EvalConfig
from facegen.core.errors import ConfigError
from PIL import Image


def test_face_similarity_on_real_photos(analyzer, photos):
    """The input's own photo scores ~1, other people score lower, a picture with no face scores 0 and is flagged."""
    reference = analyzer.face_embedding(photos["astronaut"])
    images = [Image.open(photos["astronaut"]), Image.new("RGB", (256, 256), "gray"), Image.open(photos["tom_hanks"])]
    sims, missing = face_similarities(analyzer, reference, images)
    assert missing == [False, True, False]
    assert sims[0] > 0.99 and sims[1] == 0.0 and sims[2] < 0.5


def test_summary_counts_no_face_images_as_zero():
    rows = [ImageScore("a", "style", "S* p", 0, 0.8, 20.0, False), ImageScore("a", "style", "S* p", 1, 0.0, 10.0, True),
            ImageScore("b", "action", "S* q", 0, 0.5, 30.0, False)]
    m = summarize(rows)
    assert m["overall"]["images"] == 3 and m["overall"]["no_face"] == 1
    assert math.isclose(m["overall"]["face_similarity"], 1.3 / 3)
    assert math.isclose(m["overall"]["no_face_rate"], 1 / 3)
    assert m["per_prompt"]["S* p"]["face_similarity"] == pytest.approx(0.4)
    assert m["per_face"]["b"]["text_alignment"] == 30.0 and m["per_category"]["style"]["no_face"] == 1


def test_protocol_prompts_cover_every_category():
    prompts = EvalConfig().protocol_prompts()
    assert len(prompts) >= 20 and all("S*" in p.prompt for p in prompts)
    assert {p.category for p in prompts} >= {"recontext", "style", "clothing", "accessory", "action", "background"}
    quick = load_preset("tiny").eval.protocol_prompts()  # max_prompts takes the categories in turn
    assert len({p.category for p in quick}) == len(quick) == 6
    with pytest.raises(ConfigError, match="has no S"):
        EvalConfig(prompts=["style | a painting"]).protocol_prompts()


def test_grid_has_a_row_per_prompt_and_a_column_per_seed():
    cell = 32
    rows = [(f"S* {i}", [Image.fromarray(np.full((64, 64, 3), 40 * k, np.uint8)) for k in range(4)]) for i in range(3)]
    grid = face_grid(Image.new("RGB", (50, 80)), rows, cell)
    assert grid.size == (4 * cell, cell + 3 * (cell + LABEL_HEIGHT))
    # the third image of the second row sits at its cell
    top = cell + (cell + LABEL_HEIGHT) + LABEL_HEIGHT
    assert grid.getpixel((2 * cell + cell // 2, top + cell // 2)) == (80, 80, 80)


def test_head_box_iou_reads_where_the_face_is(analyzer, photos):
    """eval.head_box's score: the IoU of the asked box and the face detected in the image (0 without one)."""
    from facegen.cluster.eval.metrics import head_box_ious
    from facegen.core.face.images import load_image

    _, face = analyzer.largest(photos["astronaut"])
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    crop = Image.fromarray(load_image(photos["astronaut"])).crop((x1 - 40, y1 - 40, x2 + 40, y2 + 40))
    canvas = Image.new("RGB", (512, 512), "gray")
    canvas.paste(crop, (200, 150))  # the face now sits at (240, 190) with its own size
    asked = (240, 190, x2 - x1, y2 - y1)
    near, far = head_box_ious(analyzer, [canvas, canvas], asked), head_box_ious(analyzer, [canvas], (0, 0, 100, 100))
    assert near[0] > 0.7 and far == [0.0]
    assert head_box_ious(analyzer, [Image.new("RGB", (256, 256), "gray")], asked) == [0.0]  # no face: 0
