"""/api/docs/ and /api/redoc/ render with no network but the loopback address."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import OFFLINE, chromium, requested_urls
from tests.web.server import running_gunicorn

pytestmark = pytest.mark.django_db(transaction=True)


def test_swagger_ui_and_redoc_list_the_operations_without_the_internet(
    subprocess_env: dict[str, str],
) -> None:
    with running_gunicorn(GUNICORN_WORKERS="1") as url, chromium(OFFLINE) as browser:
        browser.get(f"{url}/api/docs/")
        WebDriverWait(browser, 30).until(
            expected_conditions.presence_of_element_located(
                (By.CSS_SELECTOR, ".opblock-summary-path")
            )
        )
        paths = {
            element.get_attribute("data-path")
            for element in browser.find_elements(
                By.CSS_SELECTOR, ".opblock-summary-path"
            )
        }
        assert {"/api/reservations/create/", "/api/auth/token/"} <= paths

        browser.get(f"{url}/api/redoc/")
        WebDriverWait(browser, 30).until(
            expected_conditions.text_to_be_present_in_element(
                (By.TAG_NAME, "body"), "Get an API token"
            )
        )

        hosts = {urlsplit(u).hostname for u in requested_urls(browser)}
        hosts.discard(None)  # data: and blob: URLs
        assert hosts == {"127.0.0.1"}, hosts
