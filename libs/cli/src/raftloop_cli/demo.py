"""`raftloop demo`: the whole loop on the demo handbook, against a running `raftloop up`.

Before any chat, the trainer gets the handbook's general questions as the tenant's regression
set (the gate's forgetting check), unless the tenant has one. Chat clients ask the train split
of the demo questions through the gateway (the official openai client); simulated reviewers
work the review queue through the hitl API (approving right answers, correcting wrong ones with
the handbook's answer and passage); the trainer's own threshold starts a run; the demo waits
for the gate's decision, prints the before/after figures on the hold-out questions and where
the report and plot are, and shows a held-out question answered by the newly served adapter.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from raftloop_cli.demo_review import SIMULATED, Reference, decide
from raftloop_cli.services import SERVICES
from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.settings import RuntimeSettings, SettingsError

console = Console(highlight=False)
REVIEWER = "simulated-reviewer"
SERVING_MODEL = "raftloop"
ANSWER_TOKENS = 64
AHEAD = 8
"""Answers the simulated reviewers may have waiting before the chat clients pause.

The gateway batches, so the judge's requests share decode steps with the chats: a few more in
flight keep its batch full without asking questions the threshold no longer needs."""
STALL_S = 180.0
"""Reviews that stop for this long no longer hold the chat clients back."""
"""Room for a RAFT answer (a quoted sentence, then `Answer:`); longer answers get corrected."""


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Endpoints:
    """Where the services are and the keys to call them with."""

    urls: dict[str, str]
    client_key: str
    internal_key: str
    admin_key: str

    @classmethod
    def from_environment(cls) -> Endpoints:
        """Service URLs from `<SVC>_PORT` (or `<SVC>_URL`), keys from env or dev credentials."""
        urls = {
            s.name: os.environ.get(f"{s.name.upper()}_URL", s.url).rstrip("/") for s in SERVICES
        }
        keys = {
            role: os.environ.get(f"RAFTLOOP_{role.upper()}_KEY")
            for role in ("client", "internal", "admin")
        }
        if not all(keys.values()):
            try:
                dev = ensure_dev_credentials(RuntimeSettings()).api_keys
            except SettingsError:
                raise DemoError(
                    "production mode has no development keys; set RAFTLOOP_CLIENT_KEY, "
                    "RAFTLOOP_INTERNAL_KEY and RAFTLOOP_ADMIN_KEY"
                ) from None
            keys = {role: keys[role] or dev[role] for role in keys}
        return cls(urls, str(keys["client"]), str(keys["internal"]), str(keys["admin"]))


@dataclass
class Tally:
    """What has happened so far (shared by the client and reviewer threads)."""

    asked: int = 0
    chat_errors: int = 0
    approved: int = 0
    corrected: int = 0
    skipped: int = 0
    no_oracle: int = 0
    references: dict[str, Reference] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Demo:
    """One demo run; each phase is a method so a failure names the phase."""

    def __init__(self, ends: Endpoints, *, tenant: str, concurrency: int, timeout_s: float):
        self.ends, self.tenant, self.concurrency = ends, tenant, concurrency
        self.deadline = time.monotonic() + timeout_s
        self.started_at = datetime.now(UTC)
        self.tally = Tally()
        self.stop = threading.Event()
        self.http = httpx.Client(timeout=30)
        self.failure: Exception | None = None
        self.last_review = time.monotonic()
        self._pending: list[dict[str, Any]] = []
        self._pending_at = 0.0

    # ------------------------------------------------------------------ helpers

    def call(self, service: str, method: str, path: str, key: str, **kw: Any) -> httpx.Response:
        """One HTTP call; an unreachable service or an error status becomes a DemoError."""
        url = f"{self.ends.urls[service]}{path}"
        headers = {"Authorization": f"Bearer {key}", **kw.pop("headers", {})}
        try:
            response = self.http.request(method, url, headers=headers, **kw)
        except httpx.HTTPError as exc:
            raise DemoError(
                f"{service} at {self.ends.urls[service]} did not answer ({exc}); "
                "start the platform with `raftloop up` (or `make up`) first"
            ) from None
        if response.status_code >= 400:
            raise DemoError(f"{service} {method} {path}: {response.status_code} {response.text}")
        return response

    def left(self) -> float:
        """Seconds before the demo gives up."""
        return self.deadline - time.monotonic()

    def wait(self, what: str, probe: Callable[[], bool], every_s: float = 1.0) -> None:
        """Poll `probe` until it holds; past the deadline raise with `what`."""
        while not probe():
            if self.left() <= 0:
                raise DemoError(f"gave up waiting for {what}; see the logs under var/logs")
            time.sleep(every_s)

    def openai(self) -> Any:
        """The official openai client pointed at the gateway."""
        from openai import OpenAI

        return OpenAI(
            base_url=f"{self.ends.urls['gateway']}/v1",
            api_key=self.ends.client_key,
            max_retries=6,
            timeout=180,
        )

    # ------------------------------------------------------------------ phases

    def check_platform(self) -> None:
        """Every service answers and the gateway's model is loaded."""
        for name in ("gateway", "rag", "ingest", "judge", "hitl", "trainer"):
            self.call(name, "GET", "/healthz", self.ends.admin_key)

        def ready() -> bool:
            try:
                url = f"{self.ends.urls['gateway']}/readyz"
                return self.http.get(url).status_code == 200
            except httpx.HTTPError:
                return False

        self.wait("the gateway's model to load", ready, 2.0)

    def ensure_knowledge_base(self, probe_question: str) -> None:
        """Index the demo handbook if retrieval finds nothing yet (idempotent)."""

        def indexed() -> bool:
            body = {"query": probe_question, "k": 1, "tenant": self.tenant}
            got = self.call("rag", "POST", "/v1/retrieve", self.ends.internal_key, json=body)
            return bool(got.json().get("chunks"))

        if indexed():
            return
        import raftloop_demo_kb as kb

        console.print(f"adding the demo handbook ({kb.docs_dir()}) to the knowledge base")
        done = subprocess.run(
            [sys.executable, "-m", "raftloop_cli", "kb", "add", str(kb.docs_dir())],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise DemoError(f"`raftloop kb add` failed: {(done.stderr or done.stdout)[-500:]}")
        self.wait("rag to index the handbook", indexed, 2.0)

    def ensure_regression_set(self, questions: list[Any]) -> None:
        """Give the tenant's runs a forgetting check: the handbook's general questions.

        The trainer's gate checks each tenant's own regression set, and a tenant without one
        is not checked for forgetting (issue #19). A set the tenant already has is kept: it is
        its operator's, and the gate checks that one.
        """
        path = "/v1/admin/regression"
        current = self.call("trainer", "GET", path, self.ends.admin_key).json()
        if current["items"]:
            console.print(
                f"the gate checks tenant {current['tenant']!r}'s own {len(current['items'])} "
                "general questions for forgetting (kept)"
            )
            return
        items = [{"id": q.id, "question": q.question, "answer": q.answer} for q in questions]
        got = self.call("trainer", "PUT", path, self.ends.admin_key, json={"items": items}).json()
        console.print(
            f"the gate checks {got['checked_per_run']} of the handbook's {len(items)} general "
            f"questions for forgetting (set for tenant {got['tenant']!r}: PUT {path})"
        )

    def prepare(self, kb: Any, probe_question: str) -> None:
        """The platform is up, the handbook indexed, and the gate has general questions."""
        self.check_platform()
        self.ensure_knowledge_base(probe_question)
        self.ensure_regression_set(kb.regression_questions())

    def review_everything(self) -> dict[str, Any]:
        """Route every interaction of the tenant to review, once; return the old routing."""
        old: dict[str, Any] = self.call(
            "hitl", "GET", "/api/v1/routing", self.ends.admin_key
        ).json()
        new = old | {"audit_rate": 1.0, "overlap_rate": 0.0, "auto_accept": False}
        self.call("hitl", "PUT", "/api/v1/routing", self.ends.admin_key, json=new)
        return old

    def restore_routing(self, old: dict[str, Any]) -> None:
        """Put the tenant's routing back as it was."""
        self.call("hitl", "PUT", "/api/v1/routing", self.ends.admin_key, json=old)

    def training(self) -> dict[str, Any]:
        """The trainer's status: the run in progress, the latest runs, pending examples."""
        status: dict[str, Any] = self.call(
            "trainer", "GET", "/v1/admin/training", self.ends.admin_key
        ).json()
        return status

    def our_run(self) -> dict[str, Any] | None:
        """The newest run that started after this demo did."""
        for run in self.training()["runs"]:
            started = datetime.fromisoformat(str(run["started_at"]))
            started = started if started.tzinfo else started.replace(tzinfo=UTC)
            if started >= self.started_at:
                return dict(run)
        return None

    def ask(self, client: Any, question: Any) -> None:
        """One chat client turn: the question, answered by whatever is serving."""
        from openai import OpenAIError

        try:
            done = client.chat.completions.create(
                model=SERVING_MODEL,
                messages=[{"role": "user", "content": question.question}],
                max_tokens=ANSWER_TOKENS,
                temperature=0,
                user="demo-client",
            )
        except OpenAIError as exc:  # the demo reports and goes on; one lost turn is not fatal
            console.print(f"[yellow]chat error:[/] {exc}")
            with self.tally.lock:
                self.tally.chat_errors += 1
            return
        ref = Reference(question.id, question.answer, question.document, question.passage)
        with self.tally.lock:
            # The completion id is chatcmpl-<hex of the interaction id> that reviews carry.
            self.tally.references[str(UUID(hex=done.id.removeprefix("chatcmpl-")))] = ref
            self.tally.asked += 1

    def review_loop(self, on_review: Callable[[], None]) -> None:
        """Work the queue until told to stop: claim, decide, submit."""
        headers = {"X-Reviewer": REVIEWER}
        while not self.stop.is_set():
            got = self.call(
                "hitl", "POST", "/api/v1/claims", self.ends.internal_key, headers=headers
            )
            if got.status_code == 204:
                self.stop.wait(1.0)
                continue
            claim = got.json()
            item = claim["item"]
            interaction = item["event"]["interaction"]
            with self.tally.lock:
                ref = self.tally.references.get(str(interaction["interaction_id"]))
            if ref is None and not self.stop.is_set():
                # The chat thread may not have recorded this answer yet: give it a moment.
                time.sleep(2.0)
                with self.tally.lock:
                    ref = self.tally.references.get(str(interaction["interaction_id"]))
            decision = decide(interaction["answer"], interaction.get("retrieved", []), ref)
            body = {
                "action": decision.action,
                "lease_token": claim["lease_token"],
                "answer": decision.answer,
                "reason": decision.reason,
                "oracle_chunk_ids": list(decision.oracle_chunk_ids),
            }
            self.call(
                "hitl",
                "POST",
                f"/api/v1/items/{item['id']}/reviews",
                self.ends.internal_key,
                headers=headers,
                json=body,
            )
            self.last_review = time.monotonic()
            with self.tally.lock:
                setattr(self.tally, decision.action, getattr(self.tally, decision.action) + 1)
                self.tally.no_oracle += (
                    decision.action != "skipped" and not decision.oracle_chunk_ids
                )
            on_review()

    def play(self, questions: list[Any], progress: Progress, tasks: dict[str, TaskID]) -> str:
        """Chats and reviews until the trainer's threshold starts a run; return its id."""
        client = self.openai()
        reviewer = threading.Thread(
            target=self._guard(lambda: self.review_loop(lambda: self._show(progress, tasks))),
            name="simulated-reviewer",
            daemon=True,
        )
        reviewer.start()
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="demo-client")
        waiting = list(questions)
        in_flight: set[Any] = set()
        run_id: str | None = None
        last_check = 0.0
        try:
            while run_id is None:
                if self.failure is not None:
                    raise self.failure
                in_flight = {f for f in in_flight if not f.done()}
                while waiting and len(in_flight) < self.concurrency and not self.ahead():
                    in_flight.add(pool.submit(self.ask, client, waiting.pop(0)))
                self._show(progress, tasks)
                if time.monotonic() - last_check > 3:
                    last_check = time.monotonic()
                    run = self.our_run()
                    run_id = str(run["run_id"]) if run else None
                if run_id is None and self.left() <= 0:
                    raise DemoError(
                        f"the trainer's threshold was not reached in time ({self.tally.asked} "
                        "questions asked); lower TRAINER_MIN_NEW_EXAMPLES or raise --timeout-min"
                    )
                time.sleep(0.5)
        finally:
            self.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            reviewer.join(timeout=60)
        self._show(progress, tasks)
        # Once the run has started, the trainer counts new examples from its snapshot again:
        # the bar shows the threshold that was reached, not the next run's count.
        reached = next(t for t in progress.tasks if t.id == tasks["threshold"])
        progress.update(tasks["threshold"], completed=reached.total)
        return run_id

    def ahead(self) -> bool:
        """Whether the chats are far enough ahead of the reviews to wait.

        The judge and the chats share the gateway; questions asked past the threshold only
        take generation time from the judge, so the clients stay a few answers ahead.
        """
        t = self.tally
        with t.lock:
            waiting = t.asked - (t.approved + t.corrected + t.skipped)
        # An interaction that never reaches the queue (parked by a stage) must not stall them.
        stalled = time.monotonic() - self.last_review > STALL_S
        return waiting >= AHEAD and not stalled

    def _guard(self, work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except Exception as exc:  # noqa: BLE001  # re-raised in the main thread by play()
                self.failure = exc

        return run

    def _show(self, progress: Progress, tasks: dict[str, TaskID]) -> None:
        t = self.tally
        progress.update(tasks["chat"], completed=t.asked)
        progress.update(
            tasks["review"],
            completed=t.approved + t.corrected,
            description=f"reviews ({t.approved} approved, {t.corrected} corrected)",
        )
        pending = [p for p in self._pending_cache() if p["tenant"] == self.tenant]
        if pending:
            p = pending[0]
            # The run also waits for enough held-out examples for the gate to judge it.
            held = f"hold-out {p['holdout_examples']}/{p['min_holdout_items']}"
            progress.update(
                tasks["threshold"],
                completed=min(p["new_examples"], p["threshold"]),
                total=p["threshold"],
                description=f"curated toward the threshold ({held})",
            )

    def _pending_cache(self) -> list[dict[str, Any]]:
        if time.monotonic() - self._pending_at > 2:
            self._pending_at = time.monotonic()
            with contextlib.suppress(DemoError):  # a slow trainer only delays the display
                self._pending = list(self.training().get("pending", []))
        return self._pending

    def await_decision(self, run_id: str) -> dict[str, Any]:
        """Show the run's progress until the gate decides; return the finished run."""
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task(f"training {run_id}", total=None, detail="")
            while True:
                status = self.training()
                run = next((r for r in status["runs"] if r["run_id"] == run_id), None)
                if run and run["status"] not in ("running",):
                    progress.update(task, detail=run["status"], total=1, completed=1)
                    return dict(run)
                current = status.get("running") or {}
                step = current.get("progress") or {}
                phase = current.get("phase") or "training"
                if step:
                    detail = (
                        f"{phase}: step {step.get('step')}/{step.get('max_steps')} "
                        f"loss {step.get('loss', float('nan')):.3f} "
                        f"eta {step.get('eta_s', 0):.0f}s"
                    )
                    if step.get("max_steps"):
                        progress.update(task, total=step["max_steps"], completed=step.get("step"))
                else:
                    detail = phase
                progress.update(task, detail=detail)
                if self.left() <= 0:
                    raise DemoError(
                        f"run {run_id} did not finish in time; `raftloop train --status`"
                    )
                time.sleep(2)

    def base_model_line(self, question: str, model: str) -> str:
        """The base model's answer, for the console, or why there is none."""
        from openai import OpenAIError

        try:
            before, _ = self.served_answer(question, model)
        except OpenAIError as exc:  # the base model may not be addressable by that name
            return f"[dim]base model answer unavailable: {exc}[/]"
        return f"[dim]base model:[/] {before}"

    def served_answer(self, question: str, model: str) -> tuple[str, str]:
        """The gateway's answer and the adapter that gave it ("base" for none)."""
        raw = self.openai().chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": question}],
            max_tokens=ANSWER_TOKENS,
            temperature=0,
            user="demo-client",
        )
        done = raw.parse()
        return done.choices[0].message.content or "", raw.headers.get("x-raftloop-adapter", "")


def _report(run: dict[str, Any]) -> dict[str, Any]:
    path = Path(str(run.get("report_path") or ""))
    candidates = [path, path.with_suffix(".json"), path.parent / "report.json"]
    for candidate in candidates:
        if candidate.suffix == ".json" and candidate.is_file():
            data: dict[str, Any] = json.loads(candidate.read_text())
            data["_dir"] = str(candidate.parent)
            return data
    raise DemoError(f"no report found at {path}; the trainer's logs say why")


def print_figures(run: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """The gate's figures on the hold-out and regression sets; return the primary metric row."""
    for name, rows in report.get("sets", {}).items():
        label = {
            "holdout": f"hold-out questions ({run.get('holdout_examples')}, never trained on)",
            "regression": "general questions (forgetting check)",
        }.get(name, name)
        table = Table("metric", "before", "after", "change", "95% CI", title=label)
        for row in rows:
            table.add_row(
                row["metric"],
                f"{row['baseline']:.3f}",
                f"{row['candidate']:.3f}",
                f"{row['diff']:+.3f}",
                f"{row['ci_low']:+.3f} .. {row['ci_high']:+.3f}",
            )
        console.print(table)
    regression = report.get("regression") or {}
    if not regression.get("items", 1):
        note = regression.get("note")
        console.print(f"[yellow]forgetting not checked:[/] {note}", soft_wrap=True)
    folder = Path(report["_dir"])
    console.print(f"report: {folder / 'report.md'}  (JSON: {folder / 'report.json'})")
    console.print(f"plot:   {folder / 'report.png'}")
    held: list[dict[str, Any]] = report.get("sets", {}).get("holdout", [])
    return next((dict(r) for r in held if r["metric"] == "token_f1"), {})


def demo(
    tenant: Annotated[str, typer.Option(help="Tenant the demo traffic belongs to.")] = "default",
    concurrency: Annotated[int, typer.Option(min=1, max=16, help="Chat clients at once.")] = 4,
    timeout_min: Annotated[
        float, typer.Option("--timeout-min", min=1, help="Give up after this many minutes.")
    ] = 60,
    seed: Annotated[int, typer.Option(help="Order in which the questions are asked.")] = 0,
) -> None:
    """Play chat clients and simulated reviewers until the trainer trains, gates and serves."""
    import raftloop_demo_kb as kb

    try:
        ends = Endpoints.from_environment()
        run_demo(
            Demo(ends, tenant=tenant, concurrency=concurrency, timeout_s=timeout_min * 60), kb, seed
        )
    except DemoError as exc:
        console.print(f"[bold red]raftloop demo: error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None


def run_demo(d: Demo, kb: Any, seed: int) -> None:
    """The phases in order, with what the user sees at each."""
    questions = kb.train_questions()
    random.Random(seed).shuffle(questions)
    holdout = kb.holdout_questions()
    console.print(
        "[bold]raftloop demo[/]: simulated chat clients and reviewers on the demo handbook"
    )
    d.prepare(kb, questions[0].question)
    status = d.training()
    threshold = status.get("threshold")
    console.print(
        f"the trainer starts a run at {threshold or 'its threshold of'} new training examples; "
        f"asking up to {len(questions)} questions from the train split"
    )
    if not status.get("auto_train", True):
        raise DemoError("the trainer's automatic runs are off (TRAINER_AUTO_TRAIN=false)")
    old_routing = d.review_everything()
    console.print(
        f"simulated reviewers ({SIMULATED!r} in every review's reason) now review every "
        f"interaction of tenant {d.tenant!r} (restored at the end)"
    )
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            tasks = {
                "chat": progress.add_task("chats answered", total=len(questions)),
                "review": progress.add_task("reviews", total=len(questions)),
                "threshold": progress.add_task("curated toward the threshold", total=threshold),
            }
            run_id = d.play(questions, progress, tasks)
    finally:
        d.restore_routing(old_routing)
    t = d.tally
    console.print(
        f"asked {t.asked} questions ({t.chat_errors} errors); reviewed: {t.approved} approved, "
        f"{t.corrected} corrected, {t.skipped} skipped, {t.no_oracle} without a retrieved oracle"
    )
    console.print(f"the threshold started training run {run_id}; waiting for the gate's decision")
    run = d.await_decision(run_id)
    if run["status"] == "failed":
        raise DemoError(f"run {run_id} failed: {run.get('error')}")
    primary = print_figures(run, _report(run))
    if primary:
        console.print(
            f"hold-out token F1 {primary['baseline']:.3f} -> {primary['candidate']:.3f} "
            f"({primary['diff']:+.3f}, "
            f"95% CI {primary['ci_low']:+.3f} .. {primary['ci_high']:+.3f})"
        )
    decision = json.loads(run.get("decision") or "{}")
    for reason in decision.get("reasons", []):
        console.print(f"gate: {reason}")
    if run["status"] != "promoted":
        raise DemoError(f"the gate rejected adapter {run.get('adapter_id')}; serving is unchanged")
    adapter = str(run["adapter_id"])
    sample = holdout[0]
    d.wait(
        "the gateway to serve the new adapter",
        lambda: d.served_answer(sample.question, SERVING_MODEL)[1] == adapter,
        2.0,
    )
    base_name = str(run.get("base_model") or "")
    after, _ = d.served_answer(sample.question, SERVING_MODEL)
    console.print(f"\nheld-out question: {sample.question}\nreference: {sample.answer}")
    if base_name:
        console.print(d.base_model_line(sample.question, base_name))
    console.print(f"[green]adapter {adapter[:12]}:[/] {after}")
    console.print(
        f"[bold green]promoted[/] adapter {adapter} is serving at {d.ends.urls['gateway']}/v1"
    )
