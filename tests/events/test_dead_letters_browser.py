"""The dead-letter admin in a real (headless Chromium) browser, against a live server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Permission
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from events.models import DeadLetter
from tests.events.dead_letter_helpers import make_dead_letter, ping_envelope, read_all
from tests.kafka_helpers import header

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver_path = shutil.which("chromedriver")
    assert driver_path, "chromedriver missing: run infra/bootstrap.sh"
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def test_operator_requeues_a_dead_letter_from_the_browser(
    browser, live_server, fresh_topics, django_user_model
) -> None:
    user = django_user_model.objects.create_user("ops", password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            codename__in=["view_deadletter", "requeue_deadletter"]
        )
    )
    letter = make_dead_letter(fresh_topics, ping_envelope("browser"))

    browser.get(f"{live_server.url}/admin/login/?next=/admin/events/deadletter/")
    browser.find_element(By.NAME, "username").send_keys("ops")
    browser.find_element(By.NAME, "password").send_keys("pw")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

    counts = browser.find_element(By.ID, "dead-letter-counts").text
    assert fresh_topics.topic("reservation") in counts
    browser.find_element(
        By.CSS_SELECTOR, f"input[name=_selected_action][value='{letter.pk}']"
    ).click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("requeue_selected")
    browser.find_element(By.NAME, "index").click()

    assert (
        "Requeue: 1 sent." in browser.find_element(By.CSS_SELECTOR, ".messagelist").text
    )
    [message] = read_all(fresh_topics.topic("reservation"), expected=1)
    assert header(message, "x-requeued-from") == str(letter.pk)
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.REQUEUED
    assert letter.actions.get().actor == "ops"
