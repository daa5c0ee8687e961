"""The local backend: transformers + peft on CPU or GPU, generation on worker threads.

One base model; LoRA adapters are loaded from verified registry folders into one PeftModel and
selected per request through `AdapterGate`. Tokens stream to the event loop as they are made.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from raftloop_core.events import ChatMessage
from raftloop_gateway.domain import (
    BASE,
    AdapterUnavailable,
    GenerationRequest,
    NotReady,
    Piece,
    StopScanner,
)
from raftloop_gateway.gate import AdapterGate
from raftloop_gateway.sampling import step_tokens

log = logging.getLogger(__name__)
_DONE = object()


class LocalBackend:
    """A Hugging Face causal LM with hot-swappable LoRA adapters."""

    def __init__(
        self,
        model_path: Path,
        *,
        name: str,
        resolve: Callable[[str], Path],
        workers: int = 1,
        max_adapters: int = 4,
    ) -> None:
        self.base_model = name
        self.model_path = model_path
        self._resolve = resolve
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="generate")
        self._gate = AdapterGate()
        self._loaded: OrderedDict[str, None] = OrderedDict()
        self._max_adapters = max_adapters
        self._model: Any = None
        self._tokenizer: Any = None
        self._eos: set[int] = set()
        self.load_error: str | None = None

    @property
    def ready(self) -> bool:
        """Whether the base model is loaded."""
        return self._model is not None

    def load(self) -> None:
        """Load the base model and tokenizer (blocking; run it off the event loop)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            model: Any = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
        except Exception as exc:
            self.load_error = (
                f"the base model could not be loaded from {self.model_path} ({exc}); fix "
                "GATEWAY_BASE_MODEL_PATH and restart the gateway"
            )
            log.error(self.load_error)
            raise
        model.eval()
        eos = model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            self._eos.add(tokenizer.eos_token_id)
        self._tokenizer, self._model = tokenizer, model
        log.info("base model loaded", extra={"model": self.base_model})

    async def start(self) -> None:
        """Load the model on a worker thread."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self.load)

    def close(self) -> None:
        """Stop the worker threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _prompt(self, messages: Sequence[ChatMessage]) -> str:
        rendered = [{"role": m.role, "content": m.content} for m in messages]
        text: str = self._tokenizer.apply_chat_template(
            rendered, tokenize=False, add_generation_prompt=True
        )
        return text

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Prompt length in tokens."""
        if not self.ready:
            return sum(len(m.content) for m in messages) // 4
        return len(self._tokenizer(self._prompt(messages), add_special_tokens=False).input_ids)

    # ---------------------------------------------------------------- adapters

    def _load_adapter(self, adapter_id: str) -> None:
        from peft import PeftModel

        if adapter_id in self._loaded:
            self._loaded.move_to_end(adapter_id)
            return
        folder = self._resolve(adapter_id)
        with self._gate.exclusive():
            if adapter_id in self._loaded:
                return
            if isinstance(self._model, PeftModel):
                self._model.load_adapter(str(folder), adapter_name=adapter_id)
            else:
                self._model = PeftModel.from_pretrained(
                    self._model, str(folder), adapter_name=adapter_id, is_trainable=False
                )
            self._model.eval()
            self._loaded[adapter_id] = None
            while len(self._loaded) > self._max_adapters:
                evicted, _ = self._loaded.popitem(last=False)
                self._model.delete_adapter(evicted)
            self._gate.active = None  # loading changes which adapter peft has active
        log.info("adapter loaded", extra={"adapter_id": adapter_id})

    async def prepare(self, adapter_id: str) -> None:
        """Load a verified adapter ahead of its first request."""
        if not self.ready:
            return
        await asyncio.get_running_loop().run_in_executor(
            self._executor, self._load_adapter, adapter_id
        )

    def _activate(self, key: str) -> None:
        from peft import PeftModel

        model: Any = self._model
        if not isinstance(model, PeftModel):
            if key != BASE:
                raise KeyError(key)
            return
        lora: Any = model.base_model
        if key == BASE:
            lora.disable_adapter_layers()
            return
        if key not in self._loaded:
            raise KeyError(key)
        lora.enable_adapter_layers()
        model.set_adapter(key)

    # ---------------------------------------------------------------- generation

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Piece, None]:
        """Stream the answer; closing the iterator stops generation at the next token."""
        if not self.ready:
            raise NotReady(self.load_error or "the model is still loading; retry in a few seconds")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        future = loop.run_in_executor(self._executor, self._run, request, emit, cancel)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, Piece)
                yield item
        finally:
            cancel.set()
            if future.done() and not future.cancelled():
                future.exception()  # already reported through the queue

    def _run(
        self, request: GenerationRequest, emit: Callable[[object], None], cancel: threading.Event
    ) -> None:
        try:
            key = request.adapter_id or BASE
            for _ in range(3):  # an eviction may race the load; try again
                if key != BASE:
                    self._load_adapter(key)
                try:
                    with self._gate.use(key, self._activate):
                        self._decode(request, emit, cancel)
                    break
                except KeyError:
                    continue
            else:
                raise AdapterUnavailable(f"adapter {key[:12]} could not be kept loaded; retry")
        except BaseException as exc:  # handed to the event loop, which re-raises it
            emit(exc)
        finally:
            emit(_DONE)

    def _decode(
        self, request: GenerationRequest, emit: Callable[[object], None], cancel: threading.Event
    ) -> None:
        tokenizer = self._tokenizer
        prompt = tokenizer(self._prompt(request.messages), add_special_tokens=False).input_ids
        scanner = StopScanner(request.stop)
        generated: list[int] = []
        sent = ""
        finish = "length"
        for token_id, info in step_tokens(self._model, prompt, request, self._eos, tokenizer):
            if cancel.is_set():
                finish = "abort"
                break
            if token_id is None:
                finish = "stop"
                break
            generated.append(token_id)
            text = tokenizer.decode(generated, skip_special_tokens=True)
            new = "" if text.endswith("\ufffd") else text[len(sent) :]
            sent += new
            emit(Piece(text=scanner.feed(new), tokens=[info] if info else []))
            if scanner.stopped:
                finish = "stop"
                break
        emit(
            Piece(
                text=scanner.flush(),
                finish_reason=finish,
                prompt_tokens=len(prompt),
                completion_tokens=len(generated),
            )
        )
