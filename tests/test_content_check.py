"""`aftercare check` validates content; clinics override templates and protocols in their folders."""

from __future__ import annotations

from pathlib import Path

from conftest import Clinic


def _with_folders(clinic: Clinic, templates: Path | None = None,
                  protocols: Path | None = None) -> Path:
    config = clinic.folder / "content.toml"
    lines = []
    if templates:
        lines.append(f'templates_dir = "{templates}"')
    if protocols:
        lines.append(f'protocols_dir = "{protocols}"')
    text = clinic.config.read_text().replace("[messaging]\n", "[messaging]\n" + "\n".join(lines) + "\n")
    config.write_text(text, encoding="utf-8")
    return config


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_packaged_content_passes(clinic: Clinic) -> None:
    result = clinic.run("check", "--offline")
    assert result.exit_code == 0, result.stdout
    assert result.stdout.startswith("ok:")


def test_a_clinic_template_replaces_the_packaged_one(clinic: Clinic) -> None:
    own = clinic.folder / "own"
    _write(own, "en/first_48h.sms.txt",
           "{{ clinic.name }} ({{ clinic.phone }}): welcome back, {{ patient.first_name }}!"
           "{% if first_sms %} Reply STOP to opt out.{% endif %}\n")
    config = _with_folders(clinic, templates=own)
    out = clinic.run("--config", str(config), "preview", "--treatment", "cellulite",
                     "--channel", "sms").stdout
    assert "Lumiere Aesthetics (+1 212 555 0100): welcome back, Jane! Reply STOP" in out
    assert "What is normal" in out  # the step's title; other steps keep the packaged wording
    assert clinic.run("--config", str(config), "check", "--offline").exit_code == 0


def test_missing_variable_is_reported_with_file_and_line(clinic: Clinic) -> None:
    own = clinic.folder / "own"
    path = _write(own, "en/arnica.sms.txt",
                  "{{ clinic.name }} {{ clinic.phone }}\n\nHi {{ patient.nickname }}\n")
    result = clinic.run("--config", str(_with_folders(clinic, templates=own)), "check",
                        "--offline")
    assert result.exit_code == 2
    lines = [line for line in result.stdout.splitlines() if "arnica" in line]
    assert lines and lines[0].startswith(f"problem: templates: {path}:3: ")
    assert "nickname" in lines[0]


def test_syntax_error_is_reported_with_file_and_line(clinic: Clinic) -> None:
    own = clinic.folder / "own"
    path = _write(own, "en/routine.subject.txt", "{{ clinic.name }}: {% if %}\n")
    result = clinic.run("--config", str(_with_folders(clinic, templates=own)), "check",
                        "--offline")
    assert result.exit_code == 2
    assert f"problem: templates: {path}:1: " in result.stdout


def test_oversized_sms_is_reported(clinic: Clinic) -> None:
    own = clinic.folder / "own"
    path = _write(own, "en/routine.sms.txt", "{{ clinic.name }} {{ clinic.phone }} " + "x" * 400)
    result = clinic.run("--config", str(_with_folders(clinic, templates=own)), "check",
                        "--offline")
    assert result.exit_code == 2
    assert (f"problem: templates: {path}: 3 segments, GSM-7, 435 units for protocol "
            in result.stdout)
    arrow = _write(own, "en/routine.sms.txt", "{{ clinic.name }} {{ clinic.phone }} next \u2192 ok")
    result = clinic.run("--config", str(_with_folders(clinic, templates=own)), "check",
                        "--offline")
    assert f"problem: templates: {arrow}: '\u2192' (U+2192) force UCS-2" in result.stdout
    # A curly apostrophe has a GSM-7 twin: it is replaced when rendered, not a problem.
    _write(own, "en/routine.sms.txt", "{{ clinic.name }} {{ clinic.phone }} it\u2019s ok")
    result = clinic.run("--config", str(_with_folders(clinic, templates=own)), "check",
                        "--offline")
    assert result.exit_code == 0, result.stdout


def test_a_clinic_protocol_needs_its_templates(clinic: Clinic) -> None:
    protocols = clinic.folder / "protocols"
    _write(protocols, "peel.toml", """
key = "peel"
name = "chemical peel"
sessions = 3
spacing_days = [21, 28]
[[steps]]
key = "glow"
title = "Glow"
after = "2h"
valid_for = "12h"
channels = ["sms"]
""")
    config = _with_folders(clinic, protocols=protocols)
    result = clinic.run("--config", str(config), "check", "--offline")
    assert result.exit_code == 2
    assert ("problem: templates: en/glow.sms.txt is missing (protocol peel); add it, or "
            "en/peel/glow.sms.txt") in result.stdout
    listed = clinic.json("--config", str(config), "protocols")
    assert "peel" in [p["key"] for p in listed]
    for locale in ("en", "fr"):
        _write(clinic.folder / "own", f"{locale}/peel/glow.sms.txt",
               "{{ clinic.name }}, {{ clinic.phone }}: glow!{% if first_sms %} STOP{% endif %}")
    both = clinic.folder / "both.toml"
    both.write_text(config.read_text().replace(
        "[messaging]\n", f'[messaging]\ntemplates_dir = "{clinic.folder / "own"}"\n'))
    assert clinic.run("--config", str(both), "check", "--offline").exit_code == 0


def test_protocols_json_lists_course_maintenance_and_steps(clinic: Clinic) -> None:
    listed = clinic.json("protocols")
    cellulite = next(p for p in listed if p["key"] == "cellulite")
    assert set(cellulite) == {"key", "name", "region", "areas", "sessions", "spacing_days",
                              "maintenance", "maintenance_cadence", "steps"}
    assert cellulite["maintenance_cadence"] == [{"every_days": 35, "times": 3},
                                                {"every_days": 75, "times": None}]
    assert cellulite["steps"][0] == {"key": "first_48h", "title": cellulite["steps"][0]["title"],
                                     "timing": "1h after the session", "valid_for_hours": 16.0,
                                     "channels": ["sms", "email"], "on_sessions": "every"}
    human = clinic.run("protocols").stdout
    assert "cellulite: cellulite mesotherapy" in human and "first_48h" in human
    assert "maintenance reminders: every 35 days x3, then every 75 days up to the horizon" in human


def test_bad_content_folders_are_config_errors(clinic: Clinic) -> None:
    config = _with_folders(clinic, templates=clinic.folder / "nope")
    result = clinic.run("--config", str(config), "check")
    assert result.exit_code == 2
    assert "messaging.templates_dir: " in result.stderr and "is not a folder" in result.stderr


def test_a_clinic_step_template_beats_a_packaged_treatment_template(clinic: Clinic) -> None:
    # The package words `results` specially for cellulite; the clinic's own wording wins.
    own = clinic.folder / "own"
    _write(own, "en/results.sms.txt", "{{ clinic.name }} {{ clinic.phone }}: our own results note."
           "{% if first_sms %} Reply STOP to opt out.{% endif %}")
    config = _with_folders(clinic, templates=own)
    out = clinic.run("--config", str(config), "preview", "--treatment", "cellulite",
                     "--channel", "sms").stdout
    assert "Lumiere Aesthetics +1 212 555 0100: our own results note." in out
