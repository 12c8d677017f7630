"""README's screenshots of the console: Today, a patient page and the inbox, taken from
`aftercare demo --serve` with the system's headless Chromium (the browser tests' tooling).

Run: python bench/screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the browser tests' launcher

from playwright.sync_api import Page, sync_playwright  # noqa: E402

from browser_kit import launch  # noqa: E402

WIDTH = 1280
ROLE = "clinician"  # sees every action of the inbox
PATIENT = "Jane Doe"  # a flagged check-in, a booked session, a conversation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    demo = subprocess.Popen([sys.executable, "-m", "aftercare", "demo", "--serve", "--port",
                             str(args.port)], stdout=subprocess.PIPE, text=True)
    try:
        url, email, password = _read_banner(demo)
        with sync_playwright() as playwright:
            browser = launch(playwright)
            context = browser.new_context(base_url=url, viewport={"width": WIDTH, "height": 900},
                                          locale="en-US")
            page = context.new_page()
            _sign_in(page, email, password)
            _shoot(page, "/", args.out / "today.png")
            page.get_by_role("navigation", name="Main").get_by_role("link", name="Patients").click()
            page.get_by_role("link", name=PATIENT).click()
            page.get_by_role("heading", name=PATIENT, level=1).wait_for()
            # Down to the end of its timeline (the conversation and history follow).
            timeline = page.locator("#messages").bounding_box()
            assert timeline is not None, "the patient page has no #messages section"
            _shoot(page, None, args.out / "patient.png",
                   height=int(timeline["y"] + timeline["height"]) + 24)
            _shoot(page, "/inbox", args.out / "inbox.png")
            browser.close()
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.communicate(timeout=30)
    for name in ("today", "patient", "inbox"):
        print(args.out / f"{name}.png")


def _read_banner(demo: subprocess.Popen[str]) -> tuple[str, str, str]:
    """The demo's URL and the login of ROLE, from what it prints once it listens."""
    assert demo.stdout is not None
    url = login = None
    role = {"clinician": "clinician", "frontdesk": "front desk", "admin": "admin"}[ROLE]
    for line in demo.stdout:
        if found := re.search(r"Open (http://\S+)/ and sign in", line):
            url = found.group(1)
        if found := re.match(rf"\s+{role}\s+(\S+@\S+)\s+password: (.+)$", line):
            login = found.group(1), found.group(2).strip()
        if "Ctrl-C stops the demo." in line:
            break
    if url is None or login is None:
        raise SystemExit("aftercare demo --serve did not print its URL and logins")
    return url, *login


def _sign_in(page: Page, email: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()


def _shoot(page: Page, path: str | None, to: Path, height: int | None = None) -> None:
    """The whole page (or its top `height` pixels), `WIDTH` wide."""
    if path is not None:
        page.goto(path)
    page.get_by_role("heading", level=1).wait_for()
    page.mouse.move(0, 0)  # no hover effect in the picture
    if height is None:
        page.screenshot(path=to, full_page=True)
    else:
        page.screenshot(path=to, full_page=True,
                        clip={"x": 0, "y": 0, "width": WIDTH, "height": height})


if __name__ == "__main__":
    main()
