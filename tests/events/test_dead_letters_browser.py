"""The dead-letter admin in a real (headless Chromium) browser, against a live server.

With DEAD_LETTER_SCREENSHOTS=1 the test also saves the list and detail pages as the
README's screenshots (docs/screenshots/); otherwise it writes nothing into the tree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from events.core import headers as dl
from events.dead_letters.rows import encode_headers
from events.models import DeadLetter
from tests.events.dead_letter_helpers import make_dead_letter, ping_envelope, read_all
from tests.kafka_helpers import header

pytestmark = pytest.mark.django_db(transaction=True)

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WIDTH, HEIGHT = 1280, 900


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--window-size={WIDTH},{HEIGHT}",
    ):
        options.add_argument(flag)
    driver_path = shutil.which("chromedriver")
    assert driver_path, "chromedriver missing: run infra/bootstrap.sh"
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_window_size(WIDTH, HEIGHT)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: webdriver.Chrome, name: str) -> None:
    """Save the page as docs/screenshots/<name>.png, only when asked to."""
    if os.environ.get("DEAD_LETTER_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def scrolls_sideways(driver: webdriver.Chrome) -> list[str]:
    """Name what is wider than its box: the page itself, or the results table's box."""
    return driver.execute_script(
        """
        const wide = [];
        const page = document.documentElement;
        if (page.scrollWidth > window.innerWidth) wide.push("page " + page.scrollWidth);
        const results = document.querySelector("#changelist-form .results");
        if (results && results.scrollWidth > results.clientWidth)
            wide.push("results " + results.scrollWidth + " > " + results.clientWidth);
        return wide;
        """
    )


def lived_in_dead_letters() -> list[DeadLetter]:
    """Dead letters like a week of production leaves: several topics, errors, states."""
    now = datetime.now(tz=UTC)
    rows = [
        (
            "reservation-topic",
            "ReservationCreated",
            "reservation-48213",
            "events.core.types.PoisonMessage",
            "ReservationCreated data is invalid: Expected `int`, got `str` - at "
            "`$.price`; the producer on web-3 still sends prices as strings",
            1,
            0,
            "new",
            timedelta(minutes=7, seconds=12),
        ),
        (
            "payment-complete-topic",
            "PaymentCompleted",
            "reservation-48190",
            "django.db.utils.OperationalError",
            'could not obtain lock on row in relation "reservations_reservation"',
            3,
            1,
            "requeued",
            timedelta(minutes=42, seconds=3),
        ),
        (
            "seat-reserved-topic",
            "",
            "seat-1207",
            "events.core.types.PoisonMessage",
            "value is not JSON: JSON is malformed: invalid character (byte 0)",
            1,
            0,
            "new",
            timedelta(hours=2, minutes=5, seconds=48),
        ),
        (
            "seat-hold-expired-topic",
            "SeatHoldExpired",
            "seat-0873",
            "events.core.types.PoisonMessage",
            "unknown event type or version: 'SeatHoldExpired' v2",
            1,
            0,
            "resolved",
            timedelta(hours=5, minutes=31, seconds=9),
        ),
        (
            "payment-complete-topic",
            "PaymentCompleted",
            "reservation-47702",
            "reservations.models.Reservation.DoesNotExist",
            "Reservation matching query does not exist.",
            3,
            5,
            "discarded",
            timedelta(days=1, hours=3, seconds=27),
        ),
    ]
    letters = []
    # Oldest first: the list shows the latest stored on top.
    for offset, (
        topic,
        kind,
        key,
        error,
        message,
        attempts,
        replays,
        status,
        ago,
    ) in enumerate(reversed(rows), start=1):
        event_id = uuid.uuid4()
        envelope = {
            "id": str(event_id),
            "type": kind,
            "version": 1,
            "occurred_at": (now - ago - timedelta(seconds=9)).isoformat(),
            "aggregate_type": "reservation",
            "aggregate_id": key.rsplit("-", 1)[-1],
            "data": {
                "reservation_id": int(key.rsplit("-", 1)[-1]),
                "seat_id": 1207,
                "seat_number": "B-14",
                "performance_id": 31,
                "user_id": 5521,
                "price": "1200",
                "status": "PENDING",
            },
        }
        value = json.dumps(envelope).encode() if kind else b"\x00\x01ticket"
        headers = [
            ("event_id", str(event_id).encode()),
            ("event_type", kind.encode()),
            ("trace_id", uuid.uuid4().hex[:16].encode()),
            (dl.DLT_ORIGINAL_TOPIC, topic.encode()),
            (dl.DLT_EXCEPTION_FQCN, error.encode()),
            (dl.DLT_ATTEMPTS, str(attempts).encode()),
        ]
        failed_at = now - ago
        letters.append(
            DeadLetter.objects.create(
                dlq_topic=topic.replace("-topic", "-dlq"),
                dlq_partition=offset % 3,
                dlq_offset=1200 + offset,
                key=key.encode(),
                key_text=key,
                value=value,
                headers=encode_headers(headers),
                payload=envelope if kind else None,
                event_id=event_id if kind else None,
                event_type=kind,
                error_class=error,
                error_message=message,
                traceback=(
                    "Traceback (most recent call last):\n"
                    '  File "events/dispatch.py", line 182, in run\n'
                    "    handler(event)\n"
                    f"{error}: {message}"
                ),
                original_topic=topic,
                original_partition=offset % 3,
                original_offset=88_000 + offset * 17,
                original_timestamp=failed_at - timedelta(seconds=9),
                attempts=attempts,
                handler="reservations.handlers.notify_reservation_created",
                consumer_group="concert-reservations",
                replay_count=replays,
                first_failed_at=failed_at - timedelta(seconds=7),
                last_failed_at=failed_at,
                status=status,
            )
        )
    return letters[::-1]


def test_operator_reads_the_list_and_requeues_from_the_detail_page(
    browser, live_server, fresh_topics, django_user_model
) -> None:
    user = django_user_model.objects.create_user("ops", password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            codename__in=["view_deadletter", "change_deadletter", "requeue_deadletter"]
        )
    )
    shown = lived_in_dead_letters()
    browser.get(f"{live_server.url}/admin/login/?next=/admin/events/deadletter/")
    browser.find_element(By.NAME, "username").send_keys("ops")
    browser.find_element(By.NAME, "password").send_keys("pw")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

    assert browser.execute_script("return window.innerWidth") <= WIDTH
    counts = browser.find_element(By.ID, "dead-letter-counts").text
    assert "payment-complete-topic" in counts
    table = browser.find_element(By.ID, "result_list").text
    assert "PoisonMessage: ReservationCreated data is invalid" in table
    assert "OperationalError: could not obtain lock" in table
    assert scrolls_sideways(browser) == []
    for column in ("last_failure", "replays", "attempts", "error_summary"):
        cell = browser.find_element(By.CSS_SELECTOR, f"td.field-{column}")
        right = browser.execute_script(
            "return arguments[0].getBoundingClientRect().right", cell
        )
        assert right <= WIDTH, f"{column} is off screen at {WIDTH} px"
    when = browser.find_element(By.CSS_SELECTOR, "td.field-last_failure").text
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", when), when
    screenshot(browser, "dead-letter-list")

    browser.find_element(By.LINK_TEXT, str(shown[0].pk)).click()
    assert browser.find_element(By.TAG_NAME, "h1").text == (
        f"Dead letter {shown[0].pk}: reservation-topic / reservation-48213"
    )
    buttons = [
        b.text
        for b in browser.find_elements(By.CSS_SELECTOR, "#dead-letter-actions button")
    ]
    assert buttons == ["Requeue", "Resolve", "Discard"]
    top = browser.find_element(By.ID, "dl-requeue").location["y"]
    assert top < browser.find_element(By.CSS_SELECTOR, "fieldset").location["y"]
    assert top < browser.execute_script("return window.innerHeight"), (
        "the Requeue button is below the first screen"
    )
    assert scrolls_sideways(browser) == []
    screenshot(browser, "dead-letter-detail")

    letter = make_dead_letter(fresh_topics, ping_envelope("browser"))
    browser.get(f"{live_server.url}/admin/events/deadletter/{letter.pk}/change/")
    browser.find_element(By.ID, "dl-requeue").click()

    assert (
        "Requeue: 1 sent." in browser.find_element(By.CSS_SELECTOR, ".messagelist").text
    )
    assert browser.current_url.endswith(f"/admin/events/deadletter/{letter.pk}/change/")
    # Requeued, it may be requeued again, but it is no longer new.
    assert "requeued" in browser.find_element(By.ID, "dead-letter-actions").text
    [message] = read_all(fresh_topics.topic("reservation"), expected=1)
    assert header(message, "x-requeued-from") == str(letter.pk)
    assert message.value() == bytes(letter.value), "the original bytes were not sent"
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.REQUEUED
    assert letter.actions.get().actor == "ops"
