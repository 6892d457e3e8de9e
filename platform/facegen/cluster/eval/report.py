"""What evaluate.py leaves for people to look at: one image grid per face, a face-similarity vs text-alignment plot
and report.md."""
from __future__ import annotations

from PIL import Image, ImageDraw

LABEL_HEIGHT = 14  # the prompt written above each grid row


def face_grid(reference: Image.Image, rows: list[tuple[str, list[Image.Image]]], cell: int) -> Image.Image:
    """The input face in the top-left cell, then one row per prompt (its label above it), one column per seed."""
    cols = max(len(images) for _, images in rows)
    grid = Image.new("RGB", (cols * cell, cell + len(rows) * (cell + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(grid)
    grid.paste(_fit(reference, cell), (0, 0))
    draw.text((cell + 4, 4), "input face", fill="black")
    for r, (prompt, images) in enumerate(rows):
        top = cell + r * (cell + LABEL_HEIGHT)
        draw.text((2, top + 1), prompt[: cols * cell // 6], fill="black")
        for c, image in enumerate(images):
            grid.paste(_fit(image, cell), (c * cell, top + LABEL_HEIGHT))
    return grid


def _fit(image: Image.Image, cell: int) -> Image.Image:
    image = image.convert("RGB").copy()
    image.thumbnail((cell, cell))
    canvas = Image.new("RGB", (cell, cell), "white")
    canvas.paste(image, ((cell - image.width) // 2, (cell - image.height) // 2))
    return canvas


def scatter_png(per_prompt: dict, title: str, metric: str) -> bytes:
    """One point per prompt: face similarity (x) against text alignment (y) — the papers' trade-off plot."""
    from facegen.cluster import plots

    fig, ax = plots.new_axes((6.5, 4.5))
    for prompt, m in per_prompt.items():
        ax.scatter(m["face_similarity"], m["text_alignment"], s=18)
        ax.annotate(prompt[:28], (m["face_similarity"], m["text_alignment"]), fontsize=6,
                    xytext=(3, 2), textcoords="offset points")
    ax.set(xlabel=f"face similarity ({metric})", ylabel="text alignment (CLIP-T)", title=title)
    return plots.png_bytes(fig)


def report_markdown(metrics: dict, grids: dict[str, str], plot: str) -> str:
    o = metrics["overall"]
    lines = [
        f"# Evaluation: {metrics['method']} ({metrics['preset']})",
        "",
        f"Model: `{metrics['model']}` · {len(metrics['per_face'])} faces × {len(metrics['per_prompt'])} prompts × "
        f"{metrics['images_per_prompt']} images (seeds {metrics['seeds'][0]}…{metrics['seeds'][-1]})",
        "",
        "| | face similarity | text alignment (CLIP-T) | no face |",
        "|---|---:|---:|---:|",
        f"| **overall** | {o['face_similarity']:.4f} | {o['text_alignment']:.2f} | "
        f"{o['no_face']}/{o['images']} ({o['no_face_rate']:.0%}) |",
    ]
    for name, m in metrics["per_category"].items():
        lines.append(f"| {name} | {m['face_similarity']:.4f} | {m['text_alignment']:.2f} | {m['no_face']}/{m['images']} |")
    lines += ["", "## Per prompt", "", "| prompt | face similarity | CLIP-T | no face |", "|---|---:|---:|---:|"]
    for prompt, m in metrics["per_prompt"].items():
        lines.append(f"| {prompt} | {m['face_similarity']:.4f} | {m['text_alignment']:.2f} | {m['no_face']}/{m['images']} |")
    lines += ["", "## Per face", "", "| face | face similarity | CLIP-T | no face | grid |", "|---|---:|---:|---:|---|"]
    for face, m in metrics["per_face"].items():
        lines.append(f"| {face} | {m['face_similarity']:.4f} | {m['text_alignment']:.2f} | "
                     f"{m['no_face']}/{m['images']} | [{grids[face]}]({grids[face]}) |")
    if "head_box_iou" in o:
        box = ", ".join(f"{v:g}" for v in metrics.get("head_box") or [])
        lines += ["", f"Scene switch: head box [{box}] — mean IoU with the detected face "
                      f"{o['head_box_iou']:.3f} (per face: " + ", ".join(
                          f"{face} {m['head_box_iou']:.3f}" for face, m in metrics["per_face"].items()) + ")"]
    if metrics.get("skipped_faces"):
        lines += ["", "Skipped test faces (no face found in the input): " + ", ".join(metrics["skipped_faces"])]
    lines += ["", f"![face similarity vs text alignment]({plot})", "",
              f"Face similarity: {metrics['face_metric']} of the face stack's embeddings between the input face and "
              "the largest face detected in each image; an image with no detectable face scores 0. Text alignment: "
              f"CLIP score with S* read as \"{metrics['person_words']}\".", ""]
    return "\n".join(lines)
