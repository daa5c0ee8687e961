"""The local backend: transformers + peft on CPU or GPU, served by the batching engine.

One base model; LoRA adapters are loaded from verified registry folders into one PeftModel and
selected per row, so requests for different adapters and for the base share each forward pass
(`engine.py`). Tokens stream to the event loop as they are made.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from raftloop_core.events import ChatMessage
from raftloop_gateway.domain import (
    BASE,
    Constraint,
    GenerationRequest,
    NotReady,
    Piece,
)
from raftloop_gateway.engine import AdapterSlots, Engine, Job, Row
from raftloop_gateway.sampling import generator_for

log = logging.getLogger(__name__)


class LocalBackend:
    """A Hugging Face causal LM with hot-swappable LoRA adapters, batched across requests."""

    def __init__(
        self,
        model_path: Path,
        *,
        name: str,
        resolve: Callable[[str], Path],
        max_batch: int = 16,
        max_adapters: int = 4,
        dtype: str = "float32",
    ) -> None:
        self.base_model = name
        self.dtype = dtype
        self.model_path = model_path
        self._resolve = resolve
        self._max_batch = max_batch
        self._max_adapters = max_adapters
        # Loading, tokenizing and grammar compiles; the engine has its own thread.
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="backend")
        self._engine: Engine | None = None
        self._tokenizer: Any = None
        self._grammars: Any = None
        self._grammars_lock = threading.Lock()
        self.load_error: str | None = None

    @property
    def ready(self) -> bool:
        """Whether the base model is loaded and the engine runs."""
        return self._engine is not None

    @property
    def engine(self) -> Engine | None:
        """The batching engine, once the model is loaded."""
        return self._engine

    def load(self) -> None:
        """Load the base model and tokenizer and start the engine (blocking; off the loop)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            model: Any = AutoModelForCausalLM.from_pretrained(
                self.model_path, dtype=getattr(torch, self.dtype)
            )
        except Exception as exc:
            self.load_error = (
                f"the base model could not be loaded from {self.model_path} ({exc}); fix "
                "GATEWAY_BASE_MODEL_PATH and restart the gateway"
            )
            log.error(self.load_error)
            raise
        model.eval()
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self._tokenizer = tokenizer
        engine = Engine(
            model,
            tokenizer,
            eos=eos_ids,
            max_batch=self._max_batch,
            adapters=AdapterSlots(self._resolve, self._max_adapters),
        )
        engine.start()
        self._engine = engine
        log.info("base model loaded", extra={"model": self.base_model, "dtype": self.dtype})

    async def start(self) -> None:
        """Load the model on a worker thread."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self.load)

    def close(self) -> None:
        """Stop the engine and the worker threads."""
        if self._engine is not None:
            self._engine.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _prompt(self, messages: Sequence[ChatMessage]) -> str:
        rendered = [{"role": m.role, "content": m.content} for m in messages]
        text: str = self._tokenizer.apply_chat_template(
            rendered, tokenize=False, add_generation_prompt=True
        )
        return text

    def _encode(self, messages: Sequence[ChatMessage]) -> list[int]:
        ids: list[int] = self._tokenizer(self._prompt(messages), add_special_tokens=False).input_ids
        return ids

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Prompt length in tokens."""
        if not self.ready:
            return sum(len(m.content) for m in messages) // 4
        return len(self._encode(messages))

    # ---------------------------------------------------------------- adapters and grammars

    async def prepare(self, adapter_id: str) -> None:
        """Load a verified adapter ahead of its first request (on the engine thread)."""
        engine = self._engine
        if engine is None or adapter_id == BASE:
            return

        def load() -> None:
            if not engine.ensure_adapter(adapter_id):
                log.info("adapter slots all busy; it loads with its first request")

        await asyncio.wrap_future(engine.call(load))

    def _grammar_cache(self) -> Any:
        """The grammar cache, built once (0.3-0.7 s: worker threads only, never the loop)."""
        with self._grammars_lock:
            if self._grammars is None:
                from raftloop_gateway.constrain import GrammarCache

                vocab = int(self._engine.model.config.vocab_size) if self._engine else 0
                self._grammars = GrammarCache(self._tokenizer, vocab)
            return self._grammars

    async def check_constraint(self, constraint: Constraint) -> None:
        """Compile the constraint's grammar (cached) off the event loop.

        Raises:
            UnsupportedSchema: the schema uses something the decoder cannot enforce.
        """
        if not self.ready:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._executor, lambda: self._grammar_cache().compile(constraint)
        )

    # ---------------------------------------------------------------- generation

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Piece, None]:
        """Stream the answer's pieces (all `n` choices); closing the iterator frees the rows."""
        engine = self._engine
        if engine is None:
            raise NotReady(self.load_error or "the model is still loading; retry in a few seconds")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        prompt = await loop.run_in_executor(self._executor, self._encode, request.messages)
        matchers: list[Any] = [None] * request.n
        if request.constraint is not None:
            constraint = request.constraint
            matchers = await loop.run_in_executor(
                self._executor,
                lambda: [self._grammar_cache().matcher(constraint) for _ in range(request.n)],
            )
        rows = [
            Row(
                request,
                index,
                emit,
                cancel,
                matcher=matchers[index],
                generator=generator_for(request.seed, index),
            )
            for index in range(request.n)
        ]
        engine.submit(Job(prompt, rows))
        remaining = request.n
        try:
            while remaining:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, Piece)
                if item.finish_reason is not None:
                    remaining -= 1
                yield item
        finally:
            cancel.set()
            engine.wake()  # the row leaves the batch at the next step
