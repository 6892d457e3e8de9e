"""Typed configuration of the evaluation protocol (the preset's `eval:` section) and the shipped prompt list."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from facegen.core.errors import ConfigError
from facegen.core.face.config import FaceAnalyzerConfig


@dataclass
class EvalPrompt:
    category: str
    prompt: str  # with "S*"


@dataclass
class EvalConfig:
    prompts: list[str] | None = None  # "category | prompt" lines; None = the shipped list (facegen/core/config/eval_prompts.txt)
    max_prompts: int | None = None  # quick runs: N prompts, taking the categories in turn
    images_per_prompt: int = 4
    seed: int = 0  # image i of every face and prompt uses seed + i
    steps: int | None = None  # sampling; None = the method's preset default
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    # The recognizer that scores identity. None = the preset's own face analyzer; set it to another insightface
    # pack (e.g. antelopev2) so the score does not come from the same network the encoder was trained against.
    recognizer: FaceAnalyzerConfig | None = None
    # Scene switch: [x, y, w, h] on the eval canvas. Every image is drawn with the head there (through the method's
    # ControlNet, posed as the test face) and scored by head_box_iou, the IoU of this box and the detected face's box.
    head_box: list[float] | None = None
    grid_cell: int = 128  # pixels per image in the per-face grids
    # Ray: one actor per `pool_size` holds a pipeline and evaluates whole faces.
    num_gpus: float = 1.0  # per actor, when the cluster has GPUs; on a cluster with none the actors run on CPU
    num_cpus: float = 1.0
    pool_size: int = 1

    def protocol_prompts(self) -> list[EvalPrompt]:
        lines = self.prompts if self.prompts is not None else shipped_prompt_lines()
        out = [parse_prompt(line) for line in lines]
        if self.max_prompts is not None:
            out = _interleave(out)[: self.max_prompts]
        if not out:
            raise ConfigError("eval.prompts is empty")
        if self.images_per_prompt < 1:
            raise ConfigError("eval.images_per_prompt must be at least 1")
        return out


def _interleave(prompts: list[EvalPrompt]) -> list[EvalPrompt]:
    """The first prompt of every category, then the second of every category, …"""
    by_category: dict[str, list[EvalPrompt]] = {}
    for p in prompts:
        by_category.setdefault(p.category, []).append(p)
    columns = list(by_category.values())
    return [col[i] for i in range(max(map(len, columns))) for col in columns if i < len(col)]


def parse_prompt(line: str) -> EvalPrompt:
    category, sep, prompt = line.partition("|")
    if not sep:
        category, prompt = "custom", line
    prompt = prompt.strip()
    if "S*" not in prompt:
        raise ConfigError(f"eval prompt '{prompt}' has no S* (where the person goes)")
    return EvalPrompt(category.strip() or "custom", prompt)


def shipped_prompt_lines() -> list[str]:
    from facegen.core.config.data import parse_list

    return parse_list(resources.files("facegen.core.config").joinpath("eval_prompts.txt").read_text(encoding="utf-8"))


__all__ = ["EvalConfig", "EvalPrompt"]
