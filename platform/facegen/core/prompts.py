"""The prompt words every method shares and the prompt checks every pipeline runs (the CLI and the HTTP layer run them
too, before queueing). Nothing here imports torch or a model library, so bad input is refused in a blink."""
from __future__ import annotations

from facegen.core.errors import BadPrompt
from facegen.core.sampling import SIZE_MULTIPLE, check_sampling

PLACEHOLDER = "S*"
# What S* reads as where a method has no pseudo-word for it (FaceCLIP reads the face from its own slot) and, by
# default, wherever a prompt is scored (ClipScorerConfig.person_words).
PERSON_WORDS = "a person"


def as_prompts(prompt) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
    if not prompts:
        raise BadPrompt("no prompt given")
    if not all(isinstance(p, str) for p in prompts):
        raise BadPrompt("prompt must be a text or a list of texts")
    return prompts


def check_common_inputs(prompts: list[str], negative_prompt, height: int | None, width: int | None,
                        needs_placeholder: bool, size_multiple: int = SIZE_MULTIPLE) -> list[str]:
    """The checks every pipeline runs before drawing (and the CLI and HTTP layer run before queueing, through
    `Method.check_inputs`): sizes (`check_sampling`), the placeholder rule, negative prompts. Returns the negative
    prompts, one per prompt."""
    check_sampling(size_multiple=size_multiple, width=width, height=height)
    if needs_placeholder:
        for text in prompts:
            if PLACEHOLDER not in text:
                raise BadPrompt(f'prompt "{text}" has no "{PLACEHOLDER}": write where the person goes, '
                                f'e.g. "{PLACEHOLDER} as a chef"')
    negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
    if len(negatives) != len(prompts):
        raise BadPrompt(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
    if not all(isinstance(n, str) for n in negatives):
        raise BadPrompt("negative_prompt must be a text or a list of texts")
    return negatives
