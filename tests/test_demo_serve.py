"""`aftercare demo --serve`: the console on a throw-away database, as a newcomer starts it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from sqlmodel import select

from aftercare.demo import DEMO_LOGINS, URGENT_REPLY, build_console_demo
from aftercare.models import Course, Notice, Patient, Reply, Session, StaffUser
from aftercare.staff import authenticate

DEADLINE = 30
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
LOGIN = re.compile(r"^\s+(front desk|clinician|admin)\s+(\S+@\S+)\s+password: (.+)$")


def test_demo_serve_opens_the_console_with_an_urgent_reply(tmp_path: Path) -> None:
    with socket.socket() as taken:  # the asked port is in use: the demo takes another
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "aftercare", "demo", "--serve", "--port", str(busy)],
            cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp_path)}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            shown = _read_until(proc, "Ctrl-C stops the demo.")
            url = re.search(r"Open (http://127\.0\.0\.1:(\d+)/) and sign in", shown)
            assert url, shown
            assert f"Port {busy} is taken; using port {url.group(2)} instead." in shown
            logins = {m.group(1): (m.group(2), m.group(3))
                      for m in map(LOGIN.match, shown.splitlines()) if m}
            assert set(logins) == {"front desk", "clinician", "admin"}, shown
            assert "1 urgent" in shown
            with httpx.Client(base_url=url.group(1), timeout=DEADLINE) as browser:
                form = browser.get("/login")
                token = CSRF.search(form.text)
                assert form.status_code == 200 and token, form.text
                email, password = logins["clinician"]
                signed = browser.post("/login", data={"csrf": token.group(1), "email": email,
                                                      "password": password, "next": "/"})
                assert signed.status_code == 303, signed.text
                today = browser.get("/")
                assert today.status_code == 200
                # Maria's reply, in an urgent row of the replies waiting.
                row = re.search(r'<tr class="urgent"(?:(?!</tr>).)*</tr>', today.text, re.S)
                assert row and "Maria Lopez" in row.group(0), today.text
                assert "I think I have a fever" in row.group(0)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=DEADLINE)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert "Demo stopped" in out
    assert list(tmp_path.iterdir()) == []  # the throw-away database is gone


def _read_until(proc: subprocess.Popen[str], last: str) -> str:
    """What the process printed up to the line containing `last` (it failed if it ended
    first; the timer kills it if it hangs)."""
    assert proc.stdout is not None
    timer = threading.Timer(DEADLINE, proc.kill)
    timer.start()
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if last in line:
                return "".join(lines)
    finally:
        timer.cancel()
    _, err = proc.communicate(timeout=DEADLINE)
    raise AssertionError("".join(lines) + err)


def test_the_console_demo_has_each_kind_of_reply_and_a_login_per_role(tmp_path: Path) -> None:
    now = datetime(2026, 12, 2, 4, 50, tzinfo=UTC)  # 23:50 in New York: still "today" there
    made = build_console_demo(tmp_path, now=now)
    try:
        with made.app.db() as db:
            replies = {r.body: r for r in db.exec(select(Reply)).all()}
            patients = {p.id: p.name for p in db.exec(select(Patient)).all()}
            assert replies[URGENT_REPLY].triage == "urgent"
            assert patients[replies[URGENT_REPLY].patient_id] == "Maria Lopez"
            assert replies[URGENT_REPLY].received_at.replace(tzinfo=UTC) < now
            # Jane answered the bruising check-in "2" (still there): the session is flagged.
            assert replies["2"].triage == "review"
            assert patients[replies["2"].patient_id] == "Jane Doe"
            assert {r.triage for r in replies.values()} == {"urgent", "review", "routine"}
            # ... and her session 2 is today, in the clinic's time zone.
            booked = db.exec(select(Session).join(Course).where(
                Course.patient_id == replies["2"].patient_id, Session.status == "booked")).one()
            local = booked.at.replace(tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))
            assert local.date() == date(2026, 12, 1) and booked.flag
            assert (made.waiting, made.urgent, made.patients) == (3, 1, 4)
            assert {u.role for u in db.exec(select(StaffUser)).all()} == {
                "frontdesk", "clinician", "admin"}
            # Nobody acknowledged the urgent reply: the on-call contact was alerted, then
            # the alert escalated, before the console opened.
            kinds = db.exec(select(Notice.kind).where(Notice.reply_id == replies[URGENT_REPLY].id)
                            ).all()
            assert {"escalation"} <= set(kinds), kinds
            for login in DEMO_LOGINS:  # the printed passwords are the real ones
                assert authenticate(db, login.email, login.password, now).role == login.role
    finally:
        made.app.engine.dispose()
