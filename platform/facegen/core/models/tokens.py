"""Putting vectors where words stand: prompt tokenisation with placeholder slots, and a hook that writes
embeddings into those slots of a text encoder's token embeddings (used for DreamIdentity's "S*" and FaceCLIP's "id").
"""
from __future__ import annotations

import contextlib
import logging

import torch

from facegen.core.errors import BadPrompt
from facegen.core.prompts import PLACEHOLDER, as_prompts


@contextlib.contextmanager
def token_embedding_override(text_encoder, mask: torch.Tensor, values: torch.Tensor):
    """While active, the text encoder's token embeddings at `mask` (B×L bool) are replaced by `values` (n×D)."""

    def hook(_module, _inputs, output):
        output = output.clone()
        output[mask.to(output.device)] = values.to(device=output.device, dtype=output.dtype)
        return output

    handle = text_encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def tokenize_with_placeholders(tokenizer, prompt: str, num_tokens: int) -> tuple[list[int], list[int]]:
    """Token ids of `prompt` padded to the tokenizer's length, with `num_tokens` slots per "S*";
    returns (ids, slot positions). Word-level BPE makes this identical to tokenising the words that would stand there."""
    max_len = tokenizer.model_max_length
    segments = prompt.split(PLACEHOLDER)
    ids, slots = [tokenizer.bos_token_id], []
    for i, segment in enumerate(segments):
        ids += tokenizer(segment, add_special_tokens=False).input_ids
        if i < len(segments) - 1:
            slots += range(len(ids), len(ids) + num_tokens)
            # Any id but end-of-text (CLIP pools at the first EOS; its unk token IS EOS): the hook overwrites it anyway.
            ids += [tokenizer.bos_token_id] * num_tokens
    if len(ids) + 1 > max_len:
        # Its length only: a prompt can hold personal data, and logs outlive requests.
        logging.getLogger(__name__).warning("a prompt of %d tokens was truncated to %d", len(ids) + 1, max_len)
        ids = ids[: max_len - 1]
        if any(s >= max_len - 1 for s in slots):
            raise BadPrompt(f"prompt is too long: '{PLACEHOLDER}' falls beyond the {max_len}-token limit")
    ids.append(tokenizer.eos_token_id)
    ids += [tokenizer.pad_token_id] * (max_len - len(ids))
    return ids, slots


def encode_with_slots(text_encoder, tokenizer, prompts: list[str], values: torch.Tensor | None, num_tokens: int,
                      require_placeholder: bool = False, output_hidden_states: bool = False):
    """The text encoder's output for `prompts` whose "S*" slots (`num_tokens` each) hold `values` (B×k×D: row b's
    j-th slot takes values[b, j % k]); a prompt without "S*" takes none. The one path every token-writing method
    and the miniature world use. Differentiable in `values`."""
    prompts = as_prompts(prompts)
    rows, mask_rows, written = [], [], []
    for b, text in enumerate(prompts):
        if require_placeholder and PLACEHOLDER not in text:
            raise BadPrompt(f'prompt "{text}" has no "{PLACEHOLDER}": write where the person goes, e.g. '
                            f'"{PLACEHOLDER} as a chef"')
        ids, slots = tokenize_with_placeholders(tokenizer, text, num_tokens)
        rows.append(ids)
        mask_rows.append([i in slots for i in range(len(ids))])
        if values is not None:
            written += [values[b, j % values.shape[1]] for j in range(len(slots))]
        elif slots:
            raise ValueError("prompts with S* slots need values to write into them")
    device = text_encoder.device
    ids, mask = torch.tensor(rows, device=device), torch.tensor(mask_rows, device=device)
    if not written:
        return text_encoder(ids, output_hidden_states=output_hidden_states)
    with token_embedding_override(text_encoder, mask, torch.stack(written)):
        return text_encoder(ids, output_hidden_states=output_hidden_states)
