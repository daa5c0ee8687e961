"""Two tenants' real objects on the running fleet, their callers, and what each tenant sees.

For each of `acme` and `globex`: a first review-UI admin made with `raftloop hitl add-user`
(the operator's command), a reviewer that admin adds in the UI, guidelines, a routing policy,
a knowledge-base document uploaded through ingest, a LoRA adapter in the registry promoted by
the tenant's admin through the trainer, and four interactions through the gateway's chat (the
official openai client) that become review items: one approved (a curated example in the
trainer's dataset), one leased by the tenant's reviewer, one open with the tenant's feedback,
and one that the *other* tenant sent feedback on before it reached the queue.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from fleet import Fleet
from loop_support import INTERACTION_HEADER, hitl_db
from tenancy_matrix import OMIT, Alternatives

TENANTS = ("acme", "globex")
ROLES = ("client", "internal", "admin")
QUESTION = "How long is the refund window?"
REVIEWER = "rev"  # the X-Reviewer name both tenants' internal keys review under
ADAPTER_HEADER = "x-raftloop-adapter"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
USER_ID = re.compile(r"user id (\d+)")


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 90) -> None:
    """Poll `check` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


@dataclass
class Session:
    """A signed-in review-UI user: its cookie jar and CSRF token."""

    client: httpx.Client
    csrf: str

    @classmethod
    def sign_in(cls, url: str, username: str, password: str) -> Session:
        """Sign in through the form, as a browser does."""
        client = httpx.Client(base_url=url, timeout=60)
        token = CSRF.search(client.get("/login").text)
        assert token, "the sign-in page has no CSRF token"
        form = {"username": username, "password": password, "csrf_token": token.group(1)}
        done = client.post("/login", data=form)
        assert done.status_code == 303, f"{username} could not sign in: {done.status_code}"
        page = CSRF.search(client.get("/queue").text)
        assert page, "the queue page has no CSRF token"
        return cls(client, page.group(1))


@dataclass
class Tenant:
    """One tenant's keys, accounts and objects, and the secrets that identify them."""

    name: str
    keys: dict[str, str]
    marker: str = field(default_factory=lambda: secrets.token_hex(6))
    admin: str = ""
    admin_id: int = 0
    reviewer: str = ""
    password: str = field(default_factory=lambda: f"Pw-{secrets.token_urlsafe(18)}")
    doc_id: str = ""
    doc_name: str = ""
    adapter_id: str = ""
    iids: dict[str, str] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    lease_token: str = ""
    policy: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """The content marker: in its questions, document, feedback, guidelines, adapter card."""
        return f"{self.name}m{self.marker}"

    def secrets(self) -> set[str]:
        """What must never reach another tenant's caller."""
        return {
            self.tag,
            self.admin,
            self.reviewer,
            self.doc_id,
            self.adapter_id,
            self.lease_token,
            *self.iids.values(),
        }

    def headers(self, role: str) -> dict[str, str]:
        """Bearer headers of one of this tenant's keys (as its reviewer on hitl)."""
        return {"Authorization": f"Bearer {self.keys[role]}", "x-reviewer": REVIEWER}


def tenants_of(fleet: Fleet) -> dict[str, Tenant]:
    """The two tenants with their keys from the fleet's keys file."""
    return {t: Tenant(t, {r: fleet.keys[f"{t} {r}"] for r in ROLES}) for t in TENANTS}


# ---------------------------------------------------------------- building the objects


def add_first_admin(fleet: Fleet, tenant: Tenant) -> None:
    """`raftloop hitl add-user`: the operator's command for a new tenant's first admin."""
    tenant.admin = f"{tenant.name}-admin-{secrets.token_hex(4)}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "raftloop_cli",
            "hitl",
            "add-user",
            "--tenant",
            tenant.name,
            "--role",
            "admin",
            "--username",
            tenant.admin,
            "--password-stdin",
        ],
        input=tenant.password + "\n",
        env=fleet.services["hitl"].env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert tenant.password not in done.stdout + done.stderr
    found = USER_ID.search(done.stdout)
    assert found, done.stdout
    tenant.admin_id = int(found.group(1))


def set_up_review(fleet: Fleet, tenant: Tenant) -> None:
    """The admin adds a reviewer and guidelines in the UI; one reviewer per item."""
    hitl = fleet.url("hitl")
    admin = Session.sign_in(hitl, tenant.admin, tenant.password)
    tenant.reviewer = f"{tenant.name}-reviewer-{secrets.token_hex(4)}"
    form = {"username": tenant.reviewer, "password": tenant.password, "role": "reviewer"}
    added = admin.client.post("/admin/users", data=form | {"csrf_token": admin.csrf})
    assert added.status_code == 303, added.text
    text = f"{tenant.tag} guidelines: cite the handbook."
    published = admin.client.post(
        "/admin/guidelines", data={"text": text, "csrf_token": admin.csrf}
    )
    assert published.status_code == 303, published.text
    admin.client.close()
    url = f"{hitl}/api/v1/routing"
    policy = httpx.get(url, headers=tenant.headers("admin"), timeout=30).raise_for_status().json()
    tenant.policy = policy | {"overlap_rate": 0.0, "review_below": 1.0, "auto_accept": False}
    put = httpx.put(url, json=tenant.policy, headers=tenant.headers("admin"), timeout=30)
    assert put.status_code == 200, put.text


def upload_document(fleet: Fleet, tenant: Tenant) -> None:
    """A knowledge-base document through ingest, with the tenant's internal key."""
    tenant.doc_name = "handbook.md"  # the same name for both: ids must still differ
    body = (
        f"# {tenant.tag} handbook\n\nThe refund window of {tenant.tag} is 47 days. Refunds go "
        f"back to the card that paid. Ask {tenant.tag} support for anything else.\n"
    )
    done = httpx.post(
        f"{fleet.url('ingest')}/v1/documents",
        files=[("files", (tenant.doc_name, body.encode(), "text/markdown"))],
        headers=tenant.headers("internal"),
        timeout=120,
    )
    assert done.status_code == 200, done.text
    [doc] = done.json()["documents"]
    assert doc["status"] == "submitted", doc
    tenant.doc_id = doc["document_id"]


def add_adapter(fleet: Fleet, tenant: Tenant, seed: int, folder: Any) -> None:
    """A LoRA adapter of the tenant in the shared registry, promoted by its admin."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from raftloop_core.registry import AdapterCard, AdapterRegistry

    model_dir = fleet.services["gateway"].env["GATEWAY_BASE_MODEL_PATH"]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    target = folder / f"lora-{tenant.name}"
    get_peft_model(model, config).save_pretrained(target, safe_serialization=True)
    registry = AdapterRegistry(fleet.folder / "var" / "registry")
    card = AdapterCard(
        base_model=model_dir.rstrip("/").rsplit("/", 1)[-1],
        tenant=tenant.name,
        run_id=f"{tenant.tag}-run",
        dataset_version=f"{tenant.tag}-dataset",
    )
    tenant.adapter_id = registry.add(target, card)
    done = httpx.post(
        f"{fleet.url('trainer')}/v1/adapters/{tenant.adapter_id}/promote",
        json={"reason": f"{tenant.tag} first adapter"},
        headers=tenant.headers("admin"),
        timeout=60,
    )
    assert done.status_code == 200, done.text


def chat(fleet: Fleet, key: str, question: str, model: str = "raftloop") -> tuple[str, str]:
    """One chat through the gateway with the official openai client: interaction id, adapter."""
    client = openai.OpenAI(base_url=f"{fleet.url('gateway')}/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=8
    )
    raw.parse()
    return raw.headers[INTERACTION_HEADER], raw.headers[ADAPTER_HEADER]


def feedback(fleet: Fleet, key: str, interaction_id: str, text: str) -> None:
    """A rating with a comment and a correction, through the gateway."""
    body = {"interaction_id": interaction_id, "rating": -1, "comment": text, "correction": text}
    done = httpx.post(
        f"{fleet.url('gateway')}/v1/feedback",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert done.status_code == 202, done.text


def queued(fleet: Fleet, tenant: Tenant) -> dict[str, int]:
    """Interaction id -> review item id of the tenant's interactions in hitl's queue."""
    with sqlite3.connect(f"file:{hitl_db(fleet)}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute(
            "select interaction_id, id from items where tenant = ? and question like ?",
            (tenant.name, f"%{tenant.tag}%"),
        ).fetchall()
    return {str(iid): int(row_id) for iid, row_id in rows}


def item(fleet: Fleet, tenant: Tenant, item_id: int) -> dict[str, Any]:
    """A review item as the tenant's reviewer reads it."""
    got = httpx.get(
        f"{fleet.url('hitl')}/api/v1/items/{item_id}",
        headers=tenant.headers("internal"),
        timeout=30,
    )
    assert got.status_code == 200, got.text
    return dict(got.json())


def claim_roles(fleet: Fleet, tenant: Tenant, chats: list[str]) -> None:
    """Approve one item (a curated example), keep a lease on another, leave one open.

    Claims come by priority, so the roles go in the order the items come: `c` approved, `b`
    leased by the tenant's reviewer, `a` open. Item `d` (rated by the other tenant) is skipped
    by this reviewer, so it stays open and untouched.
    """
    api = f"{fleet.url('hitl')}/api/v1"
    by_item = {item_id: iid for iid, item_id in queued(fleet, tenant).items()}
    roles = ["c", "b"]
    for _ in range(10):
        got = httpx.post(f"{api}/claims", headers=tenant.headers("internal"), timeout=30)
        assert got.status_code == 200, got.text
        claim = got.json()
        item_id = int(claim["item"]["id"])
        iid = by_item[item_id]
        if iid == tenant.iids["d"]:
            body = {"action": "skipped", "lease_token": claim["lease_token"]}
        else:
            role = roles.pop(0)
            tenant.iids[role], tenant.items[role] = iid, item_id
            if role == "b":
                tenant.lease_token = str(claim["lease_token"])
                break
            body = {
                "action": "approved",
                "lease_token": claim["lease_token"],
                "answer": f"{tenant.tag}: the refund window is 47 days.",
                "reason": "two-tenant suite",
            }
        done = httpx.post(
            f"{api}/items/{item_id}/reviews", json=body, headers=tenant.headers("internal")
        )
        assert done.status_code == 200, done.text
    else:
        raise AssertionError(f"could not give {tenant.name}'s items their roles")
    [tenant.iids["a"]] = [i for i in chats if i not in tenant.iids.values()]
    tenant.items["a"] = queued(fleet, tenant)[tenant.iids["a"]]
    tenant.items["d"] = queued(fleet, tenant)[tenant.iids["d"]]


def build(fleet: Fleet, folder: Any) -> dict[str, Tenant]:
    """Both tenants with every object; returns when all of them are in place and served."""
    world = tenants_of(fleet)
    acme, globex = world["acme"], world["globex"]
    for n, tenant in enumerate(world.values()):
        add_first_admin(fleet, tenant)
        set_up_review(fleet, tenant)
        upload_document(fleet, tenant)
        add_adapter(fleet, tenant, seed=n + 1, folder=folder)
    chats: dict[str, list[str]] = {}
    for tenant in world.values():
        chats[tenant.name] = [
            chat(fleet, tenant.keys["client"], f"{tenant.tag} question {n}: {QUESTION}")[0]
            for n in range(3)
        ]
    for tenant, other in ((acme, globex), (globex, acme)):
        # The other tenant rates this interaction before it reaches the review queue: its
        # feedback must never join it (ingest and hitl both see it first).
        question = f"{tenant.tag} question d: {QUESTION}"
        tenant.iids["d"] = chat(fleet, tenant.keys["client"], question)[0]
        feedback(fleet, other.keys["client"], tenant.iids["d"], f"{other.tag} early feedback")
    for tenant in world.values():
        _give_roles(fleet, tenant, chats[tenant.name])
    for tenant in world.values():
        _wait_until_in_place(fleet, tenant)
    return world


def _give_roles(fleet: Fleet, tenant: Tenant, chats: list[str]) -> None:
    """Once the tenant's four items are queued, give them their roles and rate item a."""
    wait_for(f"{tenant.name}'s items", lambda: len(queued(fleet, tenant)) == 4, 180)
    claim_roles(fleet, tenant, chats)
    feedback(fleet, tenant.keys["client"], tenant.iids["a"], f"{tenant.tag} feedback")


def _wait_until_in_place(fleet: Fleet, tenant: Tenant) -> None:
    """Wait until the tenant's feedback, document, adapter and curated example are in place."""
    wait_for(
        f"{tenant.name}'s feedback on its item",
        lambda: tenant.tag in json.dumps(item(fleet, tenant, tenant.items["a"])["feedback"]),
    )
    wait_for(f"{tenant.name}'s document indexed", lambda: tenant.tag in retrieve(fleet, tenant))
    wait_for(
        f"{tenant.name}'s adapter served",
        lambda: chat(fleet, tenant.keys["client"], QUESTION)[1] == tenant.adapter_id,
    )
    wait_for(f"{tenant.name}'s curated example", lambda: _examples(fleet, tenant) >= 1)


def retrieve(fleet: Fleet, tenant: Tenant, query: str = QUESTION) -> str:
    """What rag returns the tenant's client for `query`."""
    got = httpx.post(
        f"{fleet.url('rag')}/v1/retrieve",
        json={"query": query},
        headers=tenant.headers("client"),
        timeout=60,
    )
    assert got.status_code == 200, got.text
    return got.text


def _examples(fleet: Fleet, tenant: Tenant) -> int:
    """The tenant's examples in the trainer's dataset (training and held out)."""
    db = fleet.folder / "var" / "trainer" / "dataset.sqlite3"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        [(count,)] = conn.execute(
            "select count(*) from trainer_examples where question like ?", (f"%{tenant.tag}%",)
        ).fetchall()
    return int(count)


# ---------------------------------------------------------------- attacks and views


def attack_values(victim: Tenant, text: str, password: str) -> dict[str, object]:
    """What an intruder fills each path id, query parameter and body field with.

    Args:
        victim: whose objects the path ids and names point at.
        text: the intruder's own marker, in every free-text field, so a write shows.
        password: the intruder's password (for the account routes).
    """
    return {
        # path ids: the victim's objects (its leased item, so the lease token fits it)
        "item_id": victim.items["b"],
        "document_id": victim.doc_id,
        "adapter_id": victim.adapter_id,
        "user_id": victim.admin_id,
        # naming the victim, or leaving the tenant out (the key's own)
        "tenant": Alternatives((victim.name, OMIT)),
        "interaction_id": victim.iids["a"],
        "model": Alternatives((victim.adapter_id, "raftloop")),
        "lease_token": victim.lease_token,
        "release_item": victim.items["b"],
        "release_token": victim.lease_token,
        "username": victim.admin,
        # the intruder's own text, so that a write into the victim's objects shows
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 8,
        "query": QUESTION,
        "action": "approved",
        "answer": text,
        "reason": text,
        "comment": text,
        "correction": text,
        "rating": -1,
        "share": 1.0,
        "question": QUESTION,
        # the trainer's regression set (issue #19): the intruder's text, so a write shows
        "items": [{"id": "intruder", "question": QUESTION, "answer": text}],
        "text": f"{text}: new guidelines",
        "password": password,
        "role": "admin",
        "active": "off",
        "files": (victim.doc_name, f"# {text}\n\nThe refund window is 1 day.\n".encode()),
        **victim.policy,
        "overlap_reviewers": 3,
    }


# Per route, values that differ from attack_values().
ROUTE_VALUES: dict[str, Callable[[Tenant], dict[str, object]]] = {
    # The review page takes the UI's action names.
    "hitl POST /items/{item_id}/review": lambda _: {"action": "approve"},
    # Leaving the tenant out would start a real run for the intruder: name the victim only.
    "trainer POST /v1/admin/train": lambda v: {"tenant": v.name},
}
# Routes that read their form by hand (no schema in the OpenAPI document).
MANUAL_FORMS = {
    "hitl POST /items/{item_id}/review": ("action", "lease_token", "answer", "reason"),
    "hitl POST /admin/routing": (
        "review_below",
        "uncertainty_above",
        "audit_rate",
        "overlap_rate",
        "overlap_reviewers",
        "auto_accept_above",
    ),
}


def _canonical(response: httpx.Response) -> str:
    try:
        return json.dumps(response.json(), sort_keys=True)
    except ValueError:
        return response.text


def view(fleet: Fleet, tenant: Tenant, admin: Session) -> dict[str, str]:
    """What the tenant itself sees of its objects, with its own keys and admin session."""
    hitl, trainer, gateway = fleet.url("hitl"), fleet.url("trainer"), fleet.url("gateway")
    reads = {
        **{
            f"item {k}": ("GET", f"{hitl}/api/v1/items/{v}", "internal", None)
            for k, v in tenant.items.items()
        },
        "routing": ("GET", f"{hitl}/api/v1/routing", "admin", None),
        "queue": ("GET", f"{hitl}/api/v1/queue", "internal", None),
        "documents (rag)": ("POST", f"{fleet.url('rag')}/v1/retrieve", "client", QUESTION),
        "adapters (trainer)": ("GET", f"{trainer}/v1/adapters", "admin", None),
        "training (trainer)": ("GET", f"{trainer}/v1/admin/training", "admin", None),
        "regression set (trainer)": ("GET", f"{trainer}/v1/admin/regression", "admin", None),
        "adapters (gateway)": ("GET", f"{gateway}/v1/admin/adapters", "admin", None),
        "agreement (judge)": ("GET", f"{fleet.url('judge')}/v1/agreement", "internal", None),
    }
    seen = {}
    for name, (method, url, role, query) in reads.items():
        body = {"query": query} if query else None
        got = httpx.request(method, url, json=body, headers=tenant.headers(role), timeout=60)
        seen[name] = f"{got.status_code} {_canonical(got)}"
    queue = json.loads(seen["queue"].partition(" ")[2])
    seen["queue"] = f"open {queue.get('open')}"  # its oldest item's age grows by the second
    models = httpx.get(f"{gateway}/v1/models", headers=tenant.headers("client"), timeout=30)
    seen["models (gateway)"] = json.dumps(
        sorted((m["id"], m.get("serving")) for m in models.json()["data"])
    )
    for page in ("/admin/users", "/guidelines", "/admin/audit"):
        got = admin.client.get(page)
        seen[f"page {page}"] = f"{got.status_code} {got.text}"
    return seen


@contextmanager
def signed_in(fleet: Fleet, username: str, password: str) -> Iterator[Session]:
    """A session for the block; its client is closed afterwards."""
    session = Session.sign_in(fleet.url("hitl"), username, password)
    try:
        yield session
    finally:
        session.client.close()
