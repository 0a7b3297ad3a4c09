"""One real-browser journey: start the app on localhost, compute the default built-in pipeline on
digits, move one class slider to -1 (the browser component of the Class-arithmetic screen), and check
that this class's accuracy drops while the others stay, and that the server's scores of the released
edit agree with what the browser drew.

Needs Debian's ``chromium`` (/usr/bin/chromium) and the ``playwright`` Python package; skipped with
the reason otherwise. A screenshot goes to test-artifacts/browser_e2e.png. The computation runs in
a fresh cache folder, as on a fresh machine. ``CVS_E2E_DATASET=synthetic-10k`` runs the same journey
on the synthetic run (for working on the test without a model).
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DATASET = os.environ.get("CVS_E2E_DATASET", "digits")
TARGET = "3" if DATASET == "digits" else "class 3"  # the class whose slider moves

if not CHROMIUM.exists():
    pytest.skip("no browser: /usr/bin/chromium is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a free localhost port, with an empty cache, shared by this module's tests (the second one
    finds the first one's run in the cache, as a returning user does); stopped (by its pid) afterwards."""
    tmp_path = tmp_path_factory.mktemp("e2e-server")
    port = free_port()
    env = {**os.environ, "CVS_CACHE_DIR": str(tmp_path / "cache"), "CVS_SYNTHETIC": "1"}
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "streamlit_app.py"),
                             "--server.port", str(port), "--server.address", "localhost",
                             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the app did not start: " + (tmp_path / "streamlit.log").read_text()[-2000:])
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group, nothing else
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def live_metric(page, label: str, part: str = "value") -> str:
    """Text of the live editor's metric ``label`` (its value or its delta), drawn by the browser."""
    return page.locator(f'.cvs-live .metric[data-metric="{label}"] .{part}').inner_text().strip()


def wait_until_idle(page, timeout_s: float = 90) -> None:
    """Wait until the app has finished every rerun (no 'Running' indicator for a second)."""
    deadline, quiet_since = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').filter(has_text="Running").count() > 0
        quiet_since = None if running else (quiet_since or time.monotonic())
        if quiet_since and time.monotonic() - quiet_since > 1.0:
            return
        page.wait_for_timeout(100)
    raise AssertionError("the app was still running after the slider moved")


@contextlib.contextmanager
def chromium_page():
    """A page of a fresh headless Chromium (1500 x 1300, 30 s default timeout), closed afterwards."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def open_forget_preset(page, server: str):
    """Open the app, compute (or open the cached) run, go to Class arithmetic -> its Forget preset button."""
    page.goto(server)
    go = page.locator('[data-testid="stBaseButton-primary"]').filter(  # "Open" when cached
        has_text=re.compile("^(Compute|Open)$"))
    go.wait_for()
    if DATASET != "digits":
        page.locator('[data-testid="stSelectbox"]').filter(has_text="Dataset").first.click()
        page.get_by_role("option", name=DATASET).click()
    go.click()
    page.get_by_text("Current run:").wait_for(timeout=300_000)  # a fine-tune from an empty cache; generous under load
    page.get_by_role("link", name="Class arithmetic").first.click()
    preset = page.get_by_role("button", name=re.compile(r"Forget this class \(λ = "))
    preset.wait_for(timeout=60_000)
    return preset


def percent(text: str) -> float:
    return float(re.sub(r"[^0-9.\-]", "", text))


@pytest.mark.timeout(420)  # the first test computes the run from an empty cache
def test_forget_one_class_in_the_browser(server):
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page() as page:
        errors = []  # a failing component logs "BidiComponent Error" instead of breaking the page
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "Component" in msg.text
                else None)
        page.goto(server)
        page.get_by_role("button", name="Compute").wait_for()
        if DATASET != "digits":
            page.locator('[data-testid="stSelectbox"]').filter(has_text="Dataset").first.click()
            page.get_by_role("option", name=DATASET).click()
        page.get_by_role("button", name="Compute").click()
        page.get_by_text("Current run:").wait_for(timeout=300_000)  # a fine-tune from an empty cache; generous under load
        assert page.locator('[data-testid="stException"]').count() == 0

        page.get_by_role("link", name="Class arithmetic").first.click()
        slider = page.get_by_role("slider", name=TARGET, exact=True)
        slider.wait_for(timeout=60_000)
        slider.focus()
        for _ in range(20):  # step 0.05: twenty presses from 0 to -1
            slider.press("ArrowLeft")
        # the browser re-scores at once; the server (map, exports) follows the release
        page.locator(".cvs-live .edit").filter(has_text=f"Edit: {TARGET} × -1.00").wait_for(timeout=10_000)
        caption = page.locator('[data-testid="stCaptionContainer"]').filter(has_text=f"edit: {TARGET} × -1.00;")
        caption.wait_for(timeout=90_000)
        wait_until_idle(page)
        value = slider.input_value()
        forget, retain = percent(live_metric(page, "Forget accuracy")), percent(live_metric(page, "Retain accuracy"))
        forget_change = percent(live_metric(page, "Forget accuracy", "delta"))
        retain_change = percent(live_metric(page, "Retain accuracy", "delta"))
        server = caption.inner_text()
        page.screenshot(path=str(ARTIFACTS / "browser_e2e.png"), full_page=True)
        assert page.locator('[data-testid="stException"]').count() == 0
    assert not errors, errors
    assert float(value) == -1.0, f"the slider should be at -1, it is at {value}"
    # At -1 the class returns to its pretrained centroid, so what is left is roughly the built-in model's
    # zero-shot accuracy on that class (assets/builtin/MODEL_CARD.md): a clear drop, not zero.
    assert forget_change <= -10, f"class {TARGET} should drop clearly, it changed by {forget_change} to {forget}%"
    assert retain_change >= -3, f"the other classes fell by {-retain_change} points to {retain}%"
    # the server's own scoring of the released edit agrees with what the browser drew
    assert f"forget {forget:.1f}%, retain {retain:.1f}%" in server, server


def test_forget_preset_reload_and_a_text_file_as_checkpoint(server, tmp_path):
    """The Forget preset forgets at the strength chosen on val (forget <= 5%, retain within 2 points); a reload
    reopens the same run and edit from the URL; a text file given as checkpoint disables Compute with the
    reason. The reload time is printed (a figure, not an assertion)."""
    ARTIFACTS.mkdir(exist_ok=True)
    notes = tmp_path / "notes.txt"
    notes.write_text("these are notes, not weights\n")
    with chromium_page() as page:
        preset = open_forget_preset(page, server)
        lam = float(re.search(r"λ = ([0-9.]+)", preset.inner_text()).group(1))
        name = "0" if DATASET == "digits" else "class 0"  # the default class of every page
        preset.click()
        page.locator(".cvs-live .edit").filter(has_text=f"Edit: {name} × -{lam:.2f}").wait_for(timeout=90_000)
        wait_until_idle(page)
        forget, retain = percent(live_metric(page, "Forget accuracy")), percent(live_metric(page, "Retain accuracy"))
        retain_change = percent(live_metric(page, "Retain accuracy", "delta"))
        page.screenshot(path=str(ARTIFACTS / "browser_forget_preset.png"), full_page=True)
        url = page.url
        start = time.monotonic()
        page.reload()
        # generous under load (2 cores shared with the rest of the suite); the time is printed, not asserted
        page.locator(".cvs-live .edit").filter(has_text=f"Edit: {name} × -{lam:.2f}").wait_for(timeout=90_000)
        reload_s = time.monotonic() - start
        wait_until_idle(page)
        forget_again = percent(live_metric(page, "Forget accuracy"))
        slider = page.get_by_role("slider", name=name, exact=True).input_value()
        page.get_by_role("link", name="Setup").first.click()
        page.get_by_text("local checkpoint").click()
        box = page.get_by_label("Checkpoint file (.safetensors, .pt, .bin)")
        box.fill(str(notes))
        box.press("Enter")
        alert = page.locator('[data-testid="stAlert"]').filter(has_text="Compute is disabled")
        alert.wait_for(timeout=30_000)
        reason = alert.inner_text()
        disabled = page.locator('[data-testid="stBaseButton-primary"]').filter(
            has_text=re.compile("^(Compute|Open)$")).is_disabled()
        page.screenshot(path=str(ARTIFACTS / "browser_bad_checkpoint.png"), full_page=True)
    print(f"forget preset on {name}: lambda {lam}, forget {forget}%, retain {retain}% ({retain_change:+} pts); "
          f"reload to the same edit in {reload_s:.2f} s")
    assert f"coefs=0%3A-{lam:g}" in url or f"coefs=0:-{lam:g}" in url, url
    assert forget <= 5, f"the Forget preset left {forget}% on class {name}"
    assert retain_change >= -2, f"the other classes fell by {-retain_change} points"
    assert forget_again == forget and float(slider) == -lam  # the same run and edit after the reload
    assert "neither a safetensors file nor a PyTorch weights file" in reason and disabled


@pytest.mark.timeout(480)
def test_forget_preset_on_every_class(server):
    """The issue's figure in a real browser: the Forget preset on every class of the run leaves forget <= 5%
    with retain within 2 points of before, and says so in the numbers the browser draws; a class whose val
    split cannot reach the target within the retain tolerance is named so on the page (the default
    built-in encoder's class 9: 3 of 161 retained val images lost at the lambda that forgets it), and only
    such a class may stay above 5%. The figures are printed (the note quotes them); the run is the one the
    earlier tests cached."""
    rows = []
    with chromium_page() as page:
        preset = open_forget_preset(page, server)
        picker = page.locator('[data-testid="stSelectbox"]').filter(has_text=re.compile(r"^Class")).first
        # both runs the test can open have 10 classes: digits '0'..'9', the synthetic one 'class 0'..
        names = [str(i) if DATASET == "digits" else f"class {i}" for i in range(10)]
        for name in names:
            page.mouse.move(0, 0)  # no tooltip over the picker
            picker.click()
            page.get_by_role("option", name=name, exact=True).click()
            wait_until_idle(page)
            lam = float(re.search(r"λ = ([0-9.]+)", preset.inner_text()).group(1))
            preset.click()
            page.locator(".cvs-live .edit").filter(has_text=f"Edit: {name} × -{lam:.2f}").wait_for(timeout=90_000)
            wait_until_idle(page)
            named = page.get_by_text(f"reaches 5% on val for {name} without").count() > 0
            rows.append((name, lam, percent(live_metric(page, "Forget accuracy")),
                         percent(live_metric(page, "Retain accuracy")),
                         percent(live_metric(page, "Retain accuracy", "delta")), named))
        page.screenshot(path=str(ARTIFACTS / "browser_forget_every_class.png"), full_page=True)
    for name, lam, forget, retain, change, named in rows:
        print(f"forget preset on {name}: lambda {lam}, forget {forget}%, retain {retain}% ({change:+} pts)"
              + (" (page: val target not reached)" if named else ""))
    assert [r for r in rows if r[2] > 5 and not r[5]] == [], rows
    assert [r[4] for r in rows if r[4] < -2] == [], rows
