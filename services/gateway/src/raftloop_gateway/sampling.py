"""Choosing a row's next token: greedy, temperature and nucleus sampling, seeds, log probs."""

from __future__ import annotations

from typing import Any

from raftloop_gateway.domain import TokenInfo


def pick(logits: Any, *, temperature: float, top_p: float, generator: Any) -> int:
    """The next token of one row from its (already masked) logits."""
    import torch

    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        beyond = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > top_p
        sorted_probs = sorted_probs.masked_fill(beyond, 0.0)
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


def token_info(logprobs: Any, token_id: int, top: int, tokenizer: Any) -> TokenInfo:
    """The chosen token's log probability and the `top` most likely alternatives."""
    import torch

    alternatives: list[tuple[str, float]] = []
    if top:
        values, ids = torch.topk(logprobs, top)
        alternatives = [
            (tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, ids, strict=True)
        ]
    return TokenInfo(tokenizer.decode([token_id]), float(logprobs[token_id]), alternatives)


def generator_for(seed: int | None, choice: int) -> Any:
    """A private random stream per choice, so a seeded request repeats whatever it shares."""
    import torch

    if seed is None:
        return None
    return torch.Generator().manual_seed((seed + choice) % 2**63)
