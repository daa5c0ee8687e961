"""The trainer on SmolLM2, CPU.

1. Training throughput: the trainer's path (transformers Trainer + peft, as the job runs it) vs
   a bare transformers+peft loop on the same RAFT examples, with the same LoRA settings.
2. The loop's latency: from the curated example that crosses TRAINER_MIN_NEW_EXAMPLES (published
   on a real broker) to the first chat completion of a running gateway whose system_fingerprint
   is the new adapter. Trainer and gateway run as their own processes (`uvicorn --factory`)
   with default settings except a small example count and a gate set to pass (the delivery
   path is measured; the SmolLM2 gate test measures the gate's judgement).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TITLE = (
    "Trainer: RAFT LoRA throughput vs bare transformers+peft, and trigger-to-served (SmolLM2, CPU)"
)
EXAMPLES = 8
BATCH = 2
LOOP_TRAIN = 8
LOOP_HOLDOUT = 3


def _bare_loop(model_dir: Path, examples: Path, params: object) -> tuple[float, int]:
    import torch

    from raftloop_trainer.encoding import encode_example, pad_batch
    from raftloop_trainer.train import load_examples, load_model, lora_model

    torch.manual_seed(0)
    tokenizer, model = load_model(model_dir, "cpu")
    model = lora_model(model, params)  # type: ignore[arg-type]
    model.train()
    data = [encode_example(tokenizer, m, max_length=384) for m in load_examples(examples)]
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    start = time.perf_counter()
    for i in range(0, len(data), BATCH):
        batch = pad_batch(data[i : i + BATCH], tokenizer.pad_token_id)
        model(**batch).loss.backward()
        optim.step()
        optim.zero_grad()
    return time.perf_counter() - start, sum(len(d["input_ids"]) for d in data)


def _throughput() -> dict[str, float | int | str]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from raftloop_models import ensure_smollm2

    from raftloop_trainer.builder import build_set, write_examples
    from raftloop_trainer.distractors import LocalDistractorSource
    from raftloop_trainer.offline import demo_sources
    from raftloop_trainer.train import LoraParams, TrainConfig, train

    model_dir = ensure_smollm2()
    params = LoraParams(
        epochs=1, batch_size=BATCH, top_layers=8, max_length=384, warmup_steps=0, save_steps=1000
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = demo_sources("train")[:EXAMPLES]
        built = build_set(sources, LocalDistractorSource.from_demo_kb(), k=1, p_oracle=0.8, seed=1)
        examples = write_examples(root / "train.jsonl", built)
        bare_s, tokens = _bare_loop(model_dir, examples, params)
        config = TrainConfig(
            base_model_dir=model_dir,
            examples_path=examples,
            output_dir=root / "job",
            params=params,
            device="cpu",
        )
        train(config)
        progress = json.loads((root / "job" / "progress.json").read_text())
    ours_s = float(progress["train_runtime_s"])
    ours_tps = progress["tokens_per_epoch"] / ours_s
    bare_tps = tokens / bare_s
    return {
        "examples": EXAMPLES,
        "tokens": tokens,
        "trainer_tokens_per_s": round(ours_tps, 1),
        "bare_loop_tokens_per_s": round(bare_tps, 1),
        "ratio": round(ours_tps / bare_tps, 3),
        "target": "trainer path >= 90% of the bare loop's tokens/s",
    }


def _curated(tenant: str, base_model: str) -> list[Any]:
    """Demo-KB train questions as curated examples: hold-out ones first, the trigger last."""
    from raftloop_core.events import ExampleCurated, RetrievedChunk
    from raftloop_trainer.domain import is_holdout
    from raftloop_trainer.offline import demo_sources

    held: list[Any] = []
    train: list[Any] = []
    for source in demo_sources("train"):
        example_id = uuid.uuid5(uuid.NAMESPACE_URL, f"bench:{tenant}:{source.example_id}")
        split = held if is_holdout(str(example_id)) else train
        if len(split) >= (LOOP_HOLDOUT if split is held else LOOP_TRAIN):
            continue
        split.append(
            ExampleCurated(
                tenant=tenant,
                example_id=example_id,
                interaction_id=uuid.uuid4(),
                source="approved",
                messages=[{"role": "user", "content": source.question}],
                question=source.question,
                answer=source.answer,
                oracle_chunks=[
                    RetrievedChunk(
                        chunk_id=c.chunk_id,
                        document_id=c.document_id or "demo",
                        text=c.text,
                        title=c.title,
                        score=1.0,
                    )
                    for c in source.oracle
                ],
                base_model=base_model,
            )
        )
    return held + train


def _serve(
    stack: ExitStack, module: str, port: int, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    out = stack.enter_context(log.open("wb"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", f"{module}.main:build",
         "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
        env=os.environ | env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )  # fmt: skip

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    stack.callback(stop)
    return proc


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready in {timeout_s}s: {log.read_text()[-2000:]}")


async def _publish(bootstrap: str, events: list[Any]) -> None:
    from raftloop_core.events import event_key
    from raftloop_core.messaging import make_broker
    from raftloop_core.settings import KafkaSettings
    from raftloop_core.topics import Topic

    broker = make_broker(KafkaSettings(bootstrap_servers=bootstrap))
    async with broker:
        await broker.start()
        for event in events:
            topic = Topic.EXAMPLE_CURATED
            await broker.publish(event, topic=topic, key=event_key(topic, event))


def _utc(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _store_with_regression_set(data: Path, tenant: str) -> Any:
    """The trainer's store, the tenant's regression set in it: the demo's first 2 questions."""
    from raftloop_trainer.offline import demo_regression_items
    from raftloop_trainer.store import DatasetStore

    store = DatasetStore(f"sqlite:///{data / 'trainer' / 'dataset.sqlite3'}")
    store.replace_regression(tenant, demo_regression_items()[:2])
    return store


def _loop(root: Path) -> dict[str, float | int | str]:
    import openai
    from raftloop_models import ensure_smollm2

    from raftloop_core.credentials import ensure_dev_credentials
    from raftloop_core.embedded import EmbeddedBroker, free_port
    from raftloop_core.messaging import ensure_topics
    from raftloop_core.settings import KafkaSettings, RuntimeSettings

    model_dir = ensure_smollm2()
    data = root / "var"
    keys = ensure_dev_credentials(RuntimeSettings(data_dir=data)).api_keys
    tenant, base_model = "bench", model_dir.name
    events = _curated(tenant, base_model)
    with ExitStack() as stack:
        broker = stack.enter_context(EmbeddedBroker(port=free_port(), log_path=root / "tansu.log"))
        ensure_topics(KafkaSettings(bootstrap_servers=broker.bootstrap_servers))
        common = {
            "RAFTLOOP_DATA_DIR": str(data),
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        gw_port, tr_port = free_port(), free_port()
        gw = _serve(stack, "raftloop_gateway", gw_port, common, root / "gateway.log")
        trainer_env = common | {
            "TRAINER_MIN_NEW_EXAMPLES": str(LOOP_TRAIN),
            "TRAINER_REGRESSION_ITEMS": "2",
            "TRAINER_MIN_HOLDOUT_ITEMS": "1",
            "TRAINER_GATE_MARGIN": "-1",
            "TRAINER_MAX_REGRESSION_DROP": "1",
            "TRAINER_DEVICE": "cpu",
        }
        tr = _serve(stack, "raftloop_trainer", tr_port, trainer_env, root / "trainer.log")
        _wait_ready(f"http://127.0.0.1:{gw_port}", gw, root / "gateway.log")
        _wait_ready(f"http://127.0.0.1:{tr_port}", tr, root / "trainer.log")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{gw_port}/v1", api_key=keys["client"])

        def fingerprint() -> str | None:
            done = client.chat.completions.create(
                model="raftloop",
                messages=[{"role": "user", "content": events[-1].question}],
                max_tokens=1,
                temperature=0,
            )
            return done.system_fingerprint

        assert fingerprint() == "base"
        store = _store_with_regression_set(data, tenant)
        asyncio.run(_publish(broker.bootstrap_servers, events[:-1]))
        deadline = time.monotonic() + 120
        while store.count(tenant, base_model) < len(events) - 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the trainer did not store the curated examples")
            time.sleep(0.2)
        t0_wall, t0 = time.time(), time.perf_counter()
        asyncio.run(_publish(broker.bootstrap_servers, events[-1:]))
        deadline = time.monotonic() + 1800
        while (served := fingerprint()) == "base":
            if time.monotonic() > deadline or tr.poll() is not None:
                raise RuntimeError(f"not served: {store.runs(limit=1)}")
            time.sleep(0.5)
        served_s, served_wall = time.perf_counter() - t0, time.time()
        [run] = store.runs(limit=1)
    if run["adapter_id"] != served or run["status"] != "promoted":
        raise RuntimeError(f"served {served}, but the run says {run}")
    started, finished = _utc(run["started_at"]), _utc(run["finished_at"])
    return {
        "loop_examples": f"{LOOP_TRAIN} train + {LOOP_HOLDOUT} hold-out (+2 regression)",
        "loop_trigger_to_served_s": round(served_s, 1),
        "loop_trigger_to_run_start_s": round(started - t0_wall, 1),
        "loop_run_s": round(finished - started, 1),
        "loop_promoted_to_served_s": round(served_wall - finished, 1),
        "loop_note": "run = snapshot, RAFT build, train job, eval job (+ local pairwise judge), "
        "gate (set to pass), registry add, promotion event",
    }


def run() -> dict[str, float | int | str]:
    figures = _throughput()
    with tempfile.TemporaryDirectory() as tmp:
        figures |= _loop(Path(tmp))
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
