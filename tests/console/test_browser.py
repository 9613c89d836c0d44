"""The console's pages in a real headless Chromium (Debian's, driven by Playwright) against the
console under uvicorn on a free port: an admin's first login to logout, a marketer's and an
auditor's, a challenged login; a screenshot of each page, each checked not to be blank."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright
from typer.testing import CliRunner

from services.cli import app as cli
from services.console.accounts import current_code
from services.core.supervisor import ServiceRunner
from services.models.registry import DataFingerprint
from tests.console.conftest import CUSTOMER, NATIONAL_ID, PASSWORD, Seen, console_settings, open_console

CHROMIUM = "/usr/bin/chromium"
HEADER_BLUE = (0x12, 0x35, 0x5B)  # the header bar (console.css): the page was styled and drawn


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless (Playwright's own browser downloads are never used)."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


class Journey:
    def __init__(self, base: str, shots: Path, seen: Seen) -> None:
        self.base, self.shots, self.seen = base, shots, seen
        self.taken: list[str] = []

    def page(self, browser: Browser, user_agent: str) -> Page:
        return browser.new_context(user_agent=user_agent, viewport={"width": 1280, "height": 900}).new_page()

    def shot(self, page: Page, name: str, *visible: str) -> None:
        """Screenshot the page and check it: the texts are shown, and the picture is a drawn page, not blank."""
        for text in visible:
            assert page.get_by_text(text, exact=False).first.is_visible(), f"{name}: {text!r} not visible"
        self.seen.texts.append((f"page {name}", page.content()))
        path = self.shots / f"{len(self.taken):02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        image = Image.open(path).convert("RGB")
        width, height = image.size
        colours = image.getcolors(maxcolors=width * height) or []  # (count, colour) of each colour
        background = max(count for count, _ in colours)
        drawn = 1 - background / (width * height)
        assert width >= 1280 and height >= 300, f"{name}: {image.size}"
        assert drawn > 0.01, f"{name}: only {drawn:.2%} of the page differs from its background"
        assert len(colours) > 30, f"{name}: {len(colours)} colours: text was not rendered"
        assert max(abs(a - b) for a, b in zip(image.getpixel((5, 5)), HEADER_BLUE)) < 8, f"{name}: no header bar"
        self.taken.append(name)

    def go(self, page: Page, path: str) -> None:
        page.goto(self.base + path)

    def first_login(self, page: Page, username: str, password: str, greeting: str, *, new_password: str | None,
                    name: str) -> str:
        """Log in for the first time and set the account up; returns the authenticator secret."""
        self.go(page, "/login")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("main button[type=submit]")
        page.wait_for_url("**/account/setup")
        if name == "admin":
            self.shot(page, "setup", "Set up your account", "Create my authenticator secret")
        page.click("text=Create my authenticator secret")
        secret = page.inner_text("#totp-secret").strip()
        if name == "admin":
            self.shot(page, "setup-secret", "Add this secret to your authenticator app")
        page.fill("input[name=greeting]", greeting)
        page.fill("input[name=code]", current_code(secret))
        if new_password:
            page.fill("input[name=new_password]", new_password)
        page.click("form[action='/account/setup'] button[type=submit]")
        page.wait_for_url(self.base + "/")
        return secret

    def log_out(self, page: Page) -> None:
        page.click("header button[type=submit]")
        page.wait_for_url("**/login")


def test_login_to_logout_through_every_page_in_chromium(tmp_path: Path, personal_numbers_stay_masked: Seen) -> None:
    database_url = f"sqlite:///{tmp_path / 'console.db'}"
    seeded = open_console(database_url, personal_numbers_stay_masked)
    seeded.seed_customer()
    seeded.context.registry.register(model_name="propensity.credit_card", algorithm="fedlr", parameters={"l2": 0.01},
                                     feature_names=["age", "income"], rows_learned=5000, iterations=20,
                                     fingerprint=DataFingerprint(), operator="ana", started_at=dt.datetime.now(dt.UTC),
                                     metrics={"auc": 0.74})
    seeded.context.close()
    env = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "REDIS_URL": "redis://127.0.0.1:9/0", "DATABASE_URL": database_url}
    created = CliRunner().invoke(cli, ["console", "create-admin", "root.admin", "--password-stdin"], input=f"{PASSWORD}\n",
                                 env=env)
    assert created.exit_code == 0, created.output
    settings = console_settings(database_url)
    runner = ServiceRunner(settings, tmp_path / "logs")
    seen = personal_numbers_stay_masked
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        runner.start("console", extra_env={"CIPHERSTREAM_CONSOLE_FEED": "false"})
        with chromium() as browser:
            _walk(Journey(f"http://127.0.0.1:{runner.ports['console']}", shots, seen), browser)
    finally:
        runner.stop_all()
    seen.texts.append(("console log", (tmp_path / "logs" / "console.log").read_text()))


def _walk(journey: Journey, browser: Browser) -> None:
    """The pages in the order people reach them; each is screenshot and checked (Journey.shot)."""
    admin = journey.page(browser, "admin-browser/1")
    journey.go(admin, "/users")  # logged out: sent to the login page
    admin.wait_for_url("**/login")
    journey.shot(admin, "login", "Log in", "greeting you chose")
    admin_secret = journey.first_login(admin, "root.admin", PASSWORD, "Blue heron at dawn", new_password=None,
                                       name="admin")
    journey.shot(admin, "home", "Your reserved greeting", "Blue heron at dawn", "root.admin")
    journey.go(admin, "/users")
    one_time = {}
    for username, role in (("mia.marketer", "marketer"), ("aud.itor", "auditor")):
        admin.fill("form[action='/users'] input[name=username]", username)
        admin.select_option("form[action='/users'] select[name=role]", role)
        admin.click("form[action='/users'] button[type=submit]")
        one_time[username] = admin.inner_text("#one-time .secret").strip()
    journey.shot(admin, "users", "Users and roles", "mia.marketer", "awaiting first login")
    journey.go(admin, "/system")
    journey.shot(admin, "system", "customer feed", "sqlite")
    journey.go(admin, "/account")
    journey.shot(admin, "account", "Your account", "Change greeting")
    journey.log_out(admin)

    marketer = journey.page(browser, "marketer-browser/1")
    journey.first_login(marketer, "mia.marketer", one_time["mia.marketer"], "Green kite", new_password="marketer's own passphrase",
                        name="marketer")
    journey.go(marketer, "/campaigns")
    marketer.fill("input[name=campaign_id]", "browser_fund")
    marketer.fill("textarea[name=document]", json.dumps({
        "product": "wealth_fund", "value": 80, "triggers": ["salary_credit"],
        "channels": [{"channel": "sms", "template": "Call 13812345678 about your fund"}]}))
    marketer.click("form[action='/campaigns'] button[type=submit]")
    marketer.wait_for_url("**/campaigns/browser_fund")
    journey.shot(marketer, "campaign", "Campaign browser_fund", "Source: console", "mia.marketer")
    journey.go(marketer, "/campaigns")
    journey.shot(marketer, "campaigns", "Campaigns", "browser_fund", "console")
    journey.go(marketer, "/models")
    journey.shot(marketer, "models", "Model versions", "propensity.credit_card", "auc=0.74")
    journey.go(marketer, "/customers")
    journey.shot(marketer, "customers", "Find a customer")
    marketer.fill("input[name=customer_id]", CUSTOMER)
    marketer.click("main button[type=submit]")
    marketer.wait_for_url(f"**/customers/{CUSTOMER}")
    journey.shot(marketer, "customer", f"Customer {CUSTOMER}", "110***********002X", "Show in full", "wealth_fund")
    assert NATIONAL_ID not in marketer.content()
    journey.go(marketer, "/users")
    journey.shot(marketer, "error", "Not possible", "users.read")
    journey.log_out(marketer)

    auditor = journey.page(browser, "auditor-browser/1")
    journey.first_login(auditor, "aud.itor", one_time["aud.itor"], "Grey owl", new_password="auditor's own passphrase",
                        name="auditor")
    journey.go(auditor, "/audit?customer_id=&verify=true")
    journey.shot(auditor, "audit", "Audit log", "intact", "customer.read", "campaign.created")
    journey.log_out(auditor)

    # The admin from another browser: a new client, so the login is challenged for a code.
    elsewhere = journey.page(browser, "admin-laptop/2")
    journey.go(elsewhere, "/login")
    elsewhere.fill("input[name=username]", "root.admin")
    elsewhere.fill("input[name=password]", PASSWORD)
    elsewhere.click("main button[type=submit]")
    elsewhere.wait_for_url("**/login/verify")
    journey.shot(elsewhere, "verify", "Confirm it is you", "new browser")
    elsewhere.fill("input[name=code]", current_code(admin_secret, time.time() + 30))  # the next step's code
    elsewhere.click("main button[type=submit]")
    elsewhere.wait_for_url(journey.base + "/")
    assert "Blue heron at dawn" in elsewhere.inner_text("#greeting")
    journey.log_out(elsewhere)
    journey.go(elsewhere, "/")
    elsewhere.wait_for_url("**/login")
    assert journey.taken == ["login", "setup", "setup-secret", "home", "users", "system", "account", "campaign",
                             "campaigns", "models", "customers", "customer", "error", "audit", "verify"]
