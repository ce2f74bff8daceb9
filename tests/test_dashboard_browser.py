"""The dashboard in a real headless browser (Debian's chromium driven by playwright)."""

from __future__ import annotations

import os
import shutil
import threading
import urllib.request

import pytest

from .gunicorn_proc import gunicorn
from .helpers import require, sql

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.browser


def _launch_args() -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def test_dashboard_shows_every_worker_and_its_charts_update(pg, tmp_path):
    require("chromium", CHROMIUM is not None, "apt-get install chromium")
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None  # type: ignore[assignment]
    require("playwright", sync_api is not None, "pip install playwright (the 'test' extra has it)")
    stop = threading.Event()
    with gunicorn(pg.url, workers=2, threads=8, max_size=3, stats_dir=str(tmp_path / "stats")) as base:

        def load() -> None:  # keep both workers busy so the charts move
            n = 0
            while not stop.is_set() and n < 5000:
                n += 1
                try:
                    urllib.request.urlopen(f"{base}/pooled/slow", timeout=10).read()
                except OSError:
                    pass

        loaders = [threading.Thread(target=load, daemon=True) for _ in range(6)]
        for t in loaders:
            t.start()
        try:
            with sync_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=_launch_args())
                try:
                    page = browser.new_page()
                    page.on("console", lambda m: print("console:", m.text))
                    page.goto(base + "/", wait_until="load")
                    page.wait_for_function(
                        "document.getElementById('status').textContent.includes('workers: 2')", timeout=30000
                    )
                    first = page.evaluate("document.getElementById('server').toDataURL()")
                    page.wait_for_function(
                        "parseInt(document.getElementById('status').textContent.split('polls: ')[1]) >= 4",
                        timeout=30000,
                    )
                    later = page.evaluate("document.getElementById('server').toDataURL()")
                    assert later != first  # the server chart was redrawn with new data
                    cards = page.locator("#workers .card").count()
                    assert cards == 2
                    legend = page.inner_text("#server-legend")
                    assert "pooled:" in legend
                    # reference lines: where the server refuses new connections, each pool's max_size
                    limit = sql(pg.admin_url, "SELECT current_setting('max_connections')::int - "
                                "(SELECT coalesce(sum(setting::int), 0) FROM pg_settings WHERE name IN "
                                "('superuser_reserved_connections', 'reserved_connections'))")[0][0]  # fmt: skip
                    assert page.get_attribute("#server", "data-refs") == f"server refuses above={limit}"
                    for canvas in page.locator("#workers canvas").all():
                        assert canvas.get_attribute("data-refs") == "max_size=3"
                    titles = page.locator("#workers .card h2").all_inner_texts()
                    assert sorted(t.split(" (")[0] for t in titles) == ["Worker 1", "Worker 2"]
                    assert all("(pid " in t for t in titles)
                    # a leak that is reported, then comes back, says so instead of looking leaked
                    urllib.request.urlopen(f"{base}/leaky", timeout=10).read()
                    page.wait_for_selector("#leaks pre.leak[data-state=returned]", timeout=30000)
                    assert "returned after" in page.inner_text("#leaks pre.leak[data-state=returned]")
                    shot = os.environ.get("TPDB_SCREENSHOT")
                    if shot:
                        page.screenshot(path=shot, full_page=True)
                except Exception:
                    print("status:", page.inner_text("#status"))
                    raise
                finally:
                    browser.close()
        finally:
            stop.set()
            for t in loaders:
                t.join(30)
        assert not any(t.is_alive() for t in loaders)
