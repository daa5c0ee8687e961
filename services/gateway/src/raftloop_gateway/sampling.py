"""Token-by-token decoding with a KV cache: sampling, seeds and log probabilities."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from raftloop_gateway.domain import GenerationRequest, TokenInfo


def _pick(logits: Any, request: GenerationRequest, generator: Any) -> int:
    import torch

    if request.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / request.temperature, dim=-1)
    if request.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        beyond = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > request.top_p
        sorted_probs = sorted_probs.masked_fill(beyond, 0.0)
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


def _info(logprobs: Any, token_id: int, top: int, tokenizer: Any) -> TokenInfo:
    import torch

    alternatives: list[tuple[str, float]] = []
    if top:
        values, ids = torch.topk(logprobs, top)
        alternatives = [
            (tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, ids, strict=True)
        ]
    return TokenInfo(tokenizer.decode([token_id]), float(logprobs[token_id]), alternatives)


def step_tokens(
    model: Any, prompt: list[int], request: GenerationRequest, eos: set[int], tokenizer: Any
) -> Iterator[tuple[int | None, TokenInfo | None]]:
    """Yield (token id, its log-prob info) per step; a None id means end of sequence."""
    import torch

    generator = None
    if request.seed is not None:
        generator = torch.Generator().manual_seed(request.seed % 2**63)
    input_ids = torch.tensor([prompt])
    past = None
    with torch.inference_mode():
        for _ in range(request.max_tokens):
            out = model(input_ids=input_ids, cache=past, use_cache=True)
            past = out.get("cache")
            logits = out.logits[0, -1].float()
            token_id = _pick(logits, request, generator)
            if token_id in eos:
                yield None, None
                return
            info = None
            if request.logprobs:
                logprobs = torch.log_softmax(logits, dim=-1)
                info = _info(logprobs, token_id, request.top_logprobs, tokenizer)
            yield token_id, info
            input_ids = torch.tensor([[token_id]])
