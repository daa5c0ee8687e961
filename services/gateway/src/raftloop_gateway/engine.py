"""Continuous batching for the local model: one thread, one forward pass per step for every row.

Requests join the running batch between decode steps (each is prefilled alone, then its cache
joins the batch) and leave it the step they finish, are cancelled or hit their limit. Rows may
run different LoRA adapters: peft's mixed-adapter forward (`adapter_names=` per row) applies
each adapter to its own rows and the base model to the rest, so tenants' adapters share passes.
Everything that touches the model (forward passes, adapter loads and evictions) happens on the
engine thread, so nothing needs a lock around the model.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftloop_gateway.domain import (
    BASE,
    AdapterUnavailable,
    GenerationRequest,
    Piece,
    StopScanner,
    TokenInfo,
)
from raftloop_gateway.kvbatch import BatchCache
from raftloop_gateway.sampling import pick, token_info

log = logging.getLogger(__name__)

Emit = Callable[[object], None]


@dataclass(eq=False)
class Row:
    """One choice of one request, from admission until it finishes."""

    request: GenerationRequest
    index: int
    emit: Emit
    cancel: threading.Event
    matcher: Any = None
    generator: Any = None
    scanner: StopScanner = field(init=False)
    prompt_tokens: int = 0
    generated: list[int] = field(default_factory=list)
    sent: str = ""
    next_token: int = 0
    finished: bool = False

    def __post_init__(self) -> None:
        self.scanner = StopScanner(self.request.stop)

    @property
    def adapter(self) -> str:
        """The adapter key this row runs (`BASE` for the bare model)."""
        return self.request.adapter_id or BASE


@dataclass(eq=False)
class Job:
    """A request waiting for admission: its prompt and its `n` rows."""

    prompt: list[int]
    rows: list[Row]

    @property
    def adapter(self) -> str:
        """The adapter every row of the job runs."""
        return self.rows[0].adapter

    @property
    def cancelled(self) -> bool:
        """Whether the client has gone."""
        return self.rows[0].cancel.is_set()


class AdapterSlots:
    """The bounded set of loaded LoRA adapters, least recently used out (engine thread only)."""

    def __init__(self, resolve: Callable[[str], Path], limit: int) -> None:
        self.resolve = resolve
        self.limit = limit
        self.loaded: OrderedDict[str, None] = OrderedDict()

    def ensure(self, engine: Engine, adapter_id: str, in_use: set[str]) -> bool:
        """Load an adapter unless it is; False while every slot serves a running row."""
        if adapter_id == BASE:
            return True
        if adapter_id in self.loaded:
            self.loaded.move_to_end(adapter_id)
            return True
        while len(self.loaded) >= self.limit:
            victim = next((a for a in self.loaded if a not in in_use), None)
            if victim is None:
                return False
            del self.loaded[victim]
            engine.model.delete_adapter(victim)
            log.info("adapter evicted", extra={"adapter_id": victim})
        engine.load_adapter(adapter_id, self.resolve(adapter_id))
        self.loaded[adapter_id] = None
        log.info("adapter loaded", extra={"adapter_id": adapter_id, "loaded": len(self.loaded)})
        return True


class Engine:
    """The decode loop: admits jobs, runs batched steps, streams pieces, retires rows."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        eos: set[int],
        max_batch: int,
        adapters: AdapterSlots,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos = eos
        self.max_batch = max_batch
        self.adapters = adapters
        self._cond = threading.Condition()
        self._inbox: deque[Job] = deque()
        self._control: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._rows: list[Row] = []
        self._batch = BatchCache()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
        self.steps = 0
        self.tokens = 0

    # ---------------------------------------------------------------- outside the thread

    def start(self) -> None:
        """Start the engine thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current step; rows still running end as aborted."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def submit(self, job: Job) -> None:
        """Queue a job for admission at the next step."""
        with self._cond:
            self._inbox.append(job)
            self._cond.notify_all()

    def wake(self) -> None:
        """Look at the queues now (a client left)."""
        with self._cond:
            self._cond.notify_all()

    def call(self, work: Callable[[], Any]) -> Future[Any]:
        """Run `work` on the engine thread between two steps (model changes go this way)."""
        future: Future[Any] = Future()
        with self._cond:
            self._control.append((work, future))
            self._cond.notify_all()
        return future

    @property
    def running(self) -> int:
        """Rows in the batch."""
        return len(self._rows)

    @property
    def waiting(self) -> int:
        """Jobs waiting for admission."""
        return len(self._inbox)

    @property
    def adapters_loaded(self) -> int:
        """LoRA adapters resident in the model."""
        return len(self.adapters.loaded)

    # ---------------------------------------------------------------- model changes

    def ensure_adapter(self, adapter_id: str) -> bool:
        """Load an adapter now unless every slot serves a running row (engine thread)."""
        return self.adapters.ensure(self, adapter_id, {row.adapter for row in self._rows})

    def load_adapter(self, adapter_id: str, folder: Path) -> None:
        """Add a LoRA adapter to the model (engine thread)."""
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(folder), adapter_name=adapter_id)
        else:
            self.model = PeftModel.from_pretrained(
                self.model, str(folder), adapter_name=adapter_id, is_trainable=False
            )
        self.model.eval()

    # ---------------------------------------------------------------- the thread

    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._cond:
                    self._cond.wait_for(
                        lambda: self._stopping or self._control or self._inbox or self._rows
                    )
                    if self._stopping:
                        break
                    control = list(self._control)
                    self._control.clear()
                for work, future in control:
                    self._run_control(work, future)
                self._drop_cancelled()
                self._admit()
                if self._rows:
                    self._step()
        for row in self._rows:
            self._finish(row, "abort")
        for job in self._inbox:
            for row in job.rows:
                row.emit(AdapterUnavailable("the gateway is shutting down; retry elsewhere"))

    @staticmethod
    def _run_control(work: Callable[[], Any], future: Future[Any]) -> None:
        try:
            future.set_result(work())
        except BaseException as exc:  # noqa: BLE001  # handed to the caller's thread
            future.set_exception(exc)

    def _drop_cancelled(self) -> None:
        gone = [i for i, row in enumerate(self._rows) if row.cancel.is_set()]
        if gone:
            for i in gone:
                self._finish(self._rows[i], "abort")
            self._retire()
        with self._cond:
            kept = [job for job in self._inbox if not job.cancelled]
            self._inbox.clear()
            self._inbox.extend(kept)

    def _admit(self) -> None:
        """Prefill waiting jobs while the batch has room; a job whose adapter waits stays."""
        in_use = {row.adapter for row in self._rows}
        with self._cond:
            waiting = list(self._inbox)
        for job in waiting:
            if len(self._rows) + len(job.rows) > self.max_batch and self._rows:
                break
            try:
                if not self.adapters.ensure(self, job.adapter, in_use):
                    continue  # every adapter slot serves a running row; admit it later
                self._prefill(job)
            except Exception as exc:
                log.exception("admission failed", extra={"adapter_id": job.adapter})
                for row in job.rows:
                    row.emit(exc if isinstance(exc, AdapterUnavailable) else _failed(exc))
            with self._cond:
                self._inbox.remove(job)
            in_use.add(job.adapter)

    def _adapter_kwargs(self, rows: list[Row]) -> dict[str, Any]:
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            return {"adapter_names": [row.adapter for row in rows]}
        return {}

    def _prefill(self, job: Job) -> None:
        import torch

        out = self.model(
            input_ids=torch.tensor([job.prompt]),
            use_cache=True,
            **self._adapter_kwargs(job.rows[:1]),
        )
        cache = out.past_key_values
        logits = out.logits[0, -1].float()
        if len(job.rows) > 1:
            cache.batch_repeat_interleave(len(job.rows))
        live = []
        for row in job.rows:
            row.prompt_tokens = len(job.prompt)
            self._advance_or_fail(row, logits.clone())
            live.append(not row.finished)
        if not any(live):
            return
        self._batch.join(cache, len(job.prompt))
        self._rows.extend(job.rows)
        self._retire()  # rows that finished on their first token leave again

    def _step(self) -> None:
        import torch

        rows = self._rows
        positions = [[row.prompt_tokens + len(row.generated) - 1] for row in rows]
        out = self.model(
            input_ids=torch.tensor([[row.next_token] for row in rows]),
            attention_mask=self._batch.step_mask(),
            position_ids=torch.tensor(positions),
            past_key_values=self._batch.cache,
            use_cache=True,
            **self._adapter_kwargs(rows),
        )
        self._batch.cache = out.past_key_values
        logits = out.logits[:, -1].float()
        for i, row in enumerate(rows):
            self._advance_or_fail(row, logits[i])
        self.steps += 1
        self._retire()

    def _advance_or_fail(self, row: Row, logits: Any) -> None:
        """Advance one row; a failure (a grammar that hit its limits) ends that row alone."""
        try:
            self._advance(row, logits)
        except Exception as exc:
            log.exception("a row failed; it ends, the batch goes on")
            row.finished = True
            row.emit(_failed(exc))

    def _advance(self, row: Row, logits: Any) -> None:
        """Choose the row's next token from its logits, stream it, and see if the row is done."""
        import torch

        request = row.request
        info: TokenInfo | None = None
        if request.logprobs:
            logprobs = torch.log_softmax(logits, dim=-1)
        if row.matcher is not None:
            row.matcher.mask(logits)
        token = pick(
            logits, temperature=request.temperature, top_p=request.top_p, generator=row.generator
        )
        if token in self.eos:
            self._finish(row, "stop")
            return
        if row.matcher is not None:
            row.matcher.accept(token)
        if request.logprobs:
            info = token_info(logprobs, token, request.top_logprobs, self.tokenizer)
        row.generated.append(token)
        row.next_token = token
        self.tokens += 1
        text = self.tokenizer.decode(row.generated, skip_special_tokens=True)
        new = "" if text.endswith("\ufffd") else text[len(row.sent) :]
        row.sent += new
        row.emit(Piece(text=row.scanner.feed(new), tokens=[info] if info else [], index=row.index))
        if row.scanner.stopped or (row.matcher is not None and row.matcher.terminated):
            self._finish(row, "stop")
        elif len(row.generated) >= request.max_tokens:
            self._finish(row, "length")

    def _finish(self, row: Row, reason: str) -> None:
        if row.finished:
            return
        row.finished = True
        row.emit(
            Piece(
                text=row.scanner.flush(),
                finish_reason=reason,
                prompt_tokens=row.prompt_tokens,
                completion_tokens=len(row.generated),
                index=row.index,
            )
        )

    def _retire(self) -> None:
        keep = [i for i, row in enumerate(self._rows) if not row.finished]
        if len(keep) == len(self._rows):
            return
        self._batch.keep(keep)
        self._rows = [self._rows[i] for i in keep]


def _failed(exc: BaseException) -> Exception:
    from raftloop_gateway.domain import GatewayError

    error = GatewayError(f"generation failed ({type(exc).__name__}); see the gateway log")
    error.status = 500
    return error
