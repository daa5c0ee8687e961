"""The review UI in Debian's headless Chromium against the real service and broker."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

import httpx
import pytest

from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.settings import KafkaSettings
from raftloop_core.topics import Topic
from raftloop_hitl.domain import RoutingPolicy, sample

from ..conftest import judged
from ..support import Service, prefixed_topics, publish_judged, read_topic, settings_for

if TYPE_CHECKING:
    from playwright.sync_api import Dialog

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[4] / "test-artifacts" / "hitl"
CORRECTION = "Refunds take five business days."


class DismissedDialogs(list[str]):
    """The messages of the browser dialogs that opened, each dismissed."""

    def __call__(self, dialog: Dialog) -> None:
        self.append(dialog.message)
        dialog.dismiss()


def single_review_id() -> UUID:
    """An interaction id that the default policy does not send to several reviewers."""
    rate = RoutingPolicy().overlap_rate
    while True:
        iid = uuid4()
        if not sample(iid, "overlap", rate):
            return iid


def wait_open(service: Service, key: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = httpx.get(
            f"{service.url}/api/v1/queue", headers={"authorization": f"Bearer {key}"}, timeout=5
        )
        if got.json()["open"] == count:
            return
        time.sleep(0.2)
    raise AssertionError(f"queue never reached {count} items")


def test_sign_in_claim_mark_correct_and_approve_with_the_keyboard(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium chromium-driver")
    from playwright.sync_api import expect, sync_playwright

    prefix = prefixed_topics(kafka_settings)
    settings = settings_for(tmp_path, kafka_settings, prefix)
    service = Service(settings, tmp_path / "hitl.log")
    service.start()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        creds = ensure_dev_credentials(settings.runtime)
        password = {a.username: a.password for a in creds.accounts}
        # p=0.5 is the most uncertain, so it comes first; the second one carries a script tag.
        first = judged(p=0.5, interaction_id=single_review_id())
        second = judged(
            p=0.2,
            interaction_id=single_review_id(),
            answer="<script>alert(1)</script> 5 days",
        )
        third = judged(p=0.15, interaction_id=single_review_id())
        fourth = judged(p=0.1, interaction_id=single_review_id())
        asyncio.run(publish_judged(kafka_settings, prefix, [first, second, third, fourth]))
        wait_open(service, creds.api_keys["internal"], 4)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            dialogs = DismissedDialogs()
            page.on("dialog", dialogs)
            page.goto(f"{service.url}/queue")
            expect(page.locator("h1")).to_have_text("Sign in")
            page.fill("input[name=username]", "reviewer")
            page.fill("input[name=password]", password["reviewer"])
            page.keyboard.press("Enter")
            page.wait_for_url(re.compile(r"/queue$"))
            expect(page.locator("tr[data-href]")).to_have_count(4)
            page.screenshot(path=ARTIFACTS / "queue.png", full_page=True)

            page.keyboard.press("n")  # claim the most valuable item
            page.wait_for_url(re.compile(r"/items/\d+$"))
            expect(page.locator("#model-answer")).to_have_text(first.interaction.answer)
            page.keyboard.press("1")  # chunk 1 answers the question: the oracle
            expect(page.locator('input[name="oracle"]').first).to_be_checked()
            page.screenshot(path=ARTIFACTS / "item.png", full_page=True)
            page.keyboard.press("c")
            page.keyboard.type(CORRECTION)
            page.keyboard.press("Control+Enter")

            page.wait_for_url(re.compile(r"/items/\d+\?m=corrected$"))
            expect(page.locator("#model-answer")).to_contain_text("<script>alert(1)</script>")
            page.screenshot(path=ARTIFACTS / "item-escaped.png", full_page=True)
            page.keyboard.press("a")
            page.wait_for_url(re.compile(r"/items/\d+\?m=approved$"))
            page.keyboard.press("r")  # reject with a reason, keyboard only
            page.keyboard.type("Makes up a refund policy.")
            page.keyboard.press("Control+Enter")
            page.wait_for_url(re.compile(r"/items/\d+\?m=rejected$"))
            page.keyboard.press("s")  # skip: it stays in the queue for someone else
            page.wait_for_url(re.compile(r"/queue\?m=skipped"))
            expect(page.locator("tr[data-href]")).to_have_count(1)
            assert dialogs == []  # the script in the answer never ran

            admin = browser.new_page(viewport={"width": 1400, "height": 1000})
            admin.goto(f"{service.url}/login")
            admin.fill("input[name=username]", "admin")
            admin.fill("input[name=password]", password["admin"])
            admin.keyboard.press("Enter")
            admin.wait_for_url(re.compile(r"/queue$"))
            admin.goto(f"{service.url}/ops")
            expect(admin.locator("#topics")).to_contain_text(prefix + Topic.EXAMPLE_CURATED)
            admin.screenshot(path=ARTIFACTS / "ops.png", full_page=True)
            admin.goto(f"{service.url}/admin/audit")
            expect(admin.locator("main table")).to_contain_text("corrected")
            browser.close()

        examples = [
            json.loads(value)
            for _, value in read_topic(kafka_settings, prefix + Topic.EXAMPLE_CURATED, expect=2)
        ]
        by_id = {e["interaction_id"]: e for e in examples}
        assert len(examples) == 2
        corrected = by_id[str(first.interaction.interaction_id)]
        assert corrected["source"] == "corrected"
        assert corrected["answer"] == CORRECTION
        assert [c["chunk_id"] for c in corrected["oracle_chunks"]] == ["doc-1#0"]
        assert corrected["oracle_chunks"][0]["text"] == first.interaction.retrieved[0].text
        assert corrected["reviewer"] == "reviewer"
        assert corrected["judge_version"] == first.judgement.judge_version
        approved = by_id[str(second.interaction.interaction_id)]
        assert approved["source"] == "approved"
        assert approved["answer"] == second.interaction.answer
        reviews = [
            json.loads(value)
            for _, value in read_topic(kafka_settings, prefix + Topic.REVIEW_COMPLETED, expect=4)
        ]
        actions = {r["interaction_id"]: (r["action"], r["reason"]) for r in reviews}
        assert actions[str(third.interaction.interaction_id)] == (
            "rejected",
            "Makes up a refund policy.",
        )
        assert actions[str(fourth.interaction.interaction_id)] == ("skipped", None)
    finally:
        service.stop()


def test_signing_out_and_an_admins_revoke_button_end_sessions_server_side(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    """#17: a copied cookie dies with the sign-out; the users page signs a reviewer out."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium chromium-driver")
    from playwright.sync_api import expect, sync_playwright

    settings = settings_for(tmp_path, kafka_settings, prefixed_topics(kafka_settings))
    service = Service(settings, tmp_path / "hitl.log")
    service.start()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    password = {a.username: a.password for a in ensure_dev_credentials(settings.runtime).accounts}

    def sign_in(page: object, username: str) -> None:
        page.goto(f"{service.url}/login")  # type: ignore[attr-defined]
        page.fill("input[name=username]", username)  # type: ignore[attr-defined]
        page.fill("input[name=password]", password[username])  # type: ignore[attr-defined]
        page.keyboard.press("Enter")  # type: ignore[attr-defined]
        page.wait_for_url(re.compile(r"/queue$"))  # type: ignore[attr-defined]

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            reviewer = browser.new_page()
            sign_in(reviewer, "reviewer")
            cookies = reviewer.context.cookies()
            thief = browser.new_page()  # a context of its own, given the copied cookie
            thief.context.add_cookies(cookies)  # type: ignore[arg-type]
            thief.goto(f"{service.url}/queue")
            expect(thief.locator("h1")).not_to_have_text("Sign in")

            reviewer.get_by_role("button", name="Sign out").click()
            expect(reviewer.locator("h1")).to_have_text("Sign in")
            thief.reload()
            expect(thief.locator("h1")).to_have_text("Sign in")

            sign_in(reviewer, "reviewer")
            admin = browser.new_page(viewport={"width": 1400, "height": 1000})
            sign_in(admin, "admin")
            admin.goto(f"{service.url}/admin/users")
            admin.get_by_role("button", name="Sign reviewer out everywhere").click()
            admin.wait_for_url(re.compile(r"/admin/users\?m="))
            expect(admin.locator(".flash")).to_have_text("signed out everywhere")
            admin.screenshot(path=ARTIFACTS / "users-revoked.png", full_page=True)
            reviewer.reload()
            expect(reviewer.locator("h1")).to_have_text("Sign in")
            admin.goto(f"{service.url}/admin/audit")
            expect(admin.locator("main table")).to_contain_text("user.revoke_sessions")
            browser.close()
    finally:
        service.stop()
