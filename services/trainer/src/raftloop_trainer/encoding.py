"""Chat-template encoding of RAFT examples: labels only on the assistant's answer tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from raftloop_trainer.raft import Message

IGNORE_INDEX = -100
KEEP_HEAD_TOKENS = 48


def render_prompt(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The prompt text in the model's chat template, ending where the assistant starts."""
    return str(
        tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    )


def encode_example(
    tokenizer: Any, messages: Sequence[Message], *, max_length: int
) -> dict[str, list[int]]:
    """Token ids and labels of a chat whose last message is the assistant target.

    The prompt is the chat template with a generation prompt; the target is the assistant text
    plus the end-of-turn token. Only target tokens carry labels. When the pair is longer than
    `max_length`, the middle of the prompt (the documents) is cut, never the target.

    Raises:
        ValueError: the last message is not the assistant's, or the target alone is too long.
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant target")
    prompt = render_prompt(tokenizer, messages[:-1])
    full = str(tokenizer.apply_chat_template(list(messages), tokenize=False))
    if not full.startswith(prompt):
        raise ValueError("the chat template does not render the prompt as a prefix of the chat")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(full[len(prompt) :].rstrip("\n"), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None and (not target_ids or target_ids[-1] != eos):
        target_ids = [*target_ids, eos]
    budget = max_length - len(target_ids)
    if budget < KEEP_HEAD_TOKENS * 2:
        raise ValueError(
            f"max_length {max_length} leaves no room for the prompt of a {len(target_ids)}-token "
            "target; raise max_length"
        )
    if len(prompt_ids) > budget:
        tail = budget - KEEP_HEAD_TOKENS
        prompt_ids = prompt_ids[:KEEP_HEAD_TOKENS] + prompt_ids[-tail:]
    return {
        "input_ids": [*prompt_ids, *target_ids],
        "labels": [IGNORE_INDEX] * len(prompt_ids) + list(target_ids),
    }


def pad_batch(features: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch to its longest member (labels with IGNORE_INDEX)."""
    import torch

    width = max(len(f["input_ids"]) for f in features)
    ids, labels, mask = [], [], []
    for f in features:
        gap = width - len(f["input_ids"])
        ids.append(f["input_ids"] + [pad_id] * gap)
        labels.append(f["labels"] + [IGNORE_INDEX] * gap)
        mask.append([1] * len(f["input_ids"]) + [0] * gap)
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "attention_mask": torch.tensor(mask, dtype=torch.long),
    }
