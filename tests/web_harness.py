"""A real browser for the web client's tests: Debian's chromium + chromium-driver via Selenium.

:func:`browser` starts headless Chromium that maps the test server names
(``a.test``, ``b.test``) to 127.0.0.1 and accepts the test CA's certificates;
:func:`wait_until` polls the page for a condition with a deadline (never a
sleep). :func:`have_browser` says whether the machine has both programs, so
the tests can say exactly what to install when it does not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CHROMIUM_NAMES = ("chromium", "chromium-browser")
DRIVER_NAMES = ("chromedriver", "chromium-driver")
WAIT_SECONDS = 20.0


def _which(names: tuple[str, ...]) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def have_browser() -> str | None:
    """None when chromium and chromedriver are installed, else what is missing."""
    missing = [what for what, names in (("chromium", CHROMIUM_NAMES),
                                        ("chromium-driver", DRIVER_NAMES))
               if _which(names) is None]
    return None if not missing else "apt-get install " + " ".join(missing)


@contextlib.contextmanager
def browser(names: list[str], *, width: int = 1280, height: int = 800,
            profile: Path | None = None) -> Iterator[Any]:
    """A headless Chromium session; ``names`` resolve to 127.0.0.1."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    binary = _which(CHROMIUM_NAMES)
    driver_path = _which(DRIVER_NAMES)
    assert binary and driver_path, have_browser()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--ignore-certificate-errors", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", "--lang=en-US",
                "--disable-features=Translate,MediaRouter,OptimizationHints",
                f"--window-size={width},{height}",
                "--host-resolver-rules=" + ", ".join(f"MAP {n} 127.0.0.1" for n in names)
                + ", EXCLUDE localhost"):
        options.add_argument(arg)
    if profile is not None:
        options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_AVOID_STATS", "true")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(driver: Any, condition: Callable[[], T | None], *, what: str,
               timeout: float = WAIT_SECONDS) -> T:
    """Poll ``condition`` until it returns something truthy; stale elements retry."""
    from selenium.common.exceptions import (
        NoAlertPresentException,
        NoSuchElementException,
        StaleElementReferenceException,
    )

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (NoSuchElementException, StaleElementReferenceException,
                NoAlertPresentException) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            logs = ""
            with contextlib.suppress(Exception):
                logs = "\n".join(str(e) for e in driver.get_log("browser")[-20:])
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 f" (last error: {last_error!r})\nbrowser log:\n{logs}")
        time.sleep(0.05)  # a poll interval, not a wait for the thing itself
