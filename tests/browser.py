"""Headless Chromium (Debian's chromium + chromium-driver) driven by selenium."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

# Every host name resolves to nothing except the loopback address: a page that
# needs the internet (a CDN, web fonts) shows it by failing.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"


@contextmanager
def chromium(
    *flags: str, width: int = 1280, height: int = 900
) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", *flags):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver_path = shutil.which("chromedriver")
    assert driver_path, "chromedriver missing: run infra/bootstrap.sh"
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: webdriver.Chrome) -> list[str]:
    """Every URL the pages asked the network for so far (Chrome's performance log).

    A request that the page's Content-Security-Policy stopped never left the browser,
    so it is not counted.
    """
    urls: dict[str, str] = {}
    blocked: set[str] = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif message["method"] == "Network.loadingFailed" and params.get(
            "blockedReason"
        ) in ("csp", "content-type"):
            blocked.add(params["requestId"])
    return [url for request_id, url in urls.items() if request_id not in blocked]
