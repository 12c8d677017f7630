"""Patients: adding them with validated contact data, and finding them by id or clinic ref."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session as DbSession
from sqlmodel import select

from aftercare.clock import Clock, zone
from aftercare.errors import SMS_OPTED_OUT, UserError
from aftercare.history import record
from aftercare.models import Patient
from aftercare.planning import PlanChanges, Planner, replan_patient
from aftercare.protocols import CHANNELS
from aftercare.queries import get_by_id
from aftercare.reachability import CLOSED_BY


def normalize_phone(text: str, country: str) -> str:
    """`text` as an E.164 number; a number without a country code takes `country`'s."""
    try:
        number = phonenumbers.parse(text, country)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise UserError(
            "phone", f"'{text}' is not a valid phone number; write it with its country code, "
            "e.g. +1 212 555 0123"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(text: str) -> str:
    """`text` as a normalised email address, or a UserError."""
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise UserError("email", f"'{text}' is not a valid email address ({exc})") from None


def parse_channels(text: str | None, phone: str | None, email: str | None) -> str:
    """The consented channels as stored ("sms,email"); default: every channel with contact data."""
    if text is None:
        chosen = [c for c, contact in (("sms", phone), ("email", email)) if contact]
        if not chosen:
            raise UserError("phone", "give --phone or --email so the patient can be reached")
        return ",".join(chosen)
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [c for c in chosen if c not in CHANNELS]
    if unknown or not chosen:
        raise UserError("channels", f"'{text}' is not valid; use sms, email or sms,email")
    if "sms" in chosen and not phone:
        raise UserError("channels", "sms needs a phone number; add --phone")
    if "email" in chosen and not email:
        raise UserError("channels", "email needs an address; add --email")
    return ",".join(c for c in CHANNELS if c in chosen)


@dataclass(frozen=True)
class NewPatient:
    """What staff type when adding a patient; validated by `add_patient`."""

    name: str
    phone: str | None = None
    email: str | None = None
    timezone: str | None = None
    locale: str | None = None
    channels: str | None = None
    ref: str | None = None


def add_patient(
    db: DbSession,
    new: NewPatient,
    *,
    country: str,
    default_timezone: str,
    default_locale: str,
    locales: tuple[str, ...],
    clock: Clock,
) -> Patient:
    """Validate and store a patient; nothing is written if any field is wrong."""
    name = _name(new.name)
    phone = normalize_phone(new.phone, country) if new.phone else None
    email = normalize_email(new.email) if new.email else None
    timezone = new.timezone or default_timezone
    zone(timezone)
    locale = _locale(new.locale or default_locale, locales)
    channels = parse_channels(new.channels, phone, email)
    ref = _free_ref(db, new.ref, None)
    patient = Patient(name=name, phone=phone, email=email, timezone=timezone, locale=locale,
                      channels=channels, ref=ref, created_at=clock())
    db.add(patient)
    db.flush()  # the id, for the caller's output; the caller commits
    return patient


def _name(text: str) -> str:
    name = text.strip()
    if not name:
        raise UserError("name", "must not be empty")
    if len(name) > 200:
        raise UserError("name", "is longer than 200 characters")
    return name


def _locale(locale: str, locales: tuple[str, ...]) -> str:
    if locale not in locales:
        raise UserError("locale", f"'{locale}' has no message templates; use one of "
                        f"{', '.join(locales)}")
    return locale


def _free_ref(db: DbSession, text: str | None, patient_id: int | None) -> str | None:
    ref = text.strip() if text else None
    if ref and len(ref) > 64:
        raise UserError("ref", "is longer than 64 characters")
    if ref:
        taken = db.exec(select(Patient).where(Patient.ref == ref)).first()
        if taken is not None and taken.id != patient_id:
            raise UserError("ref", f"'{ref}' already belongs to patient {taken.id}")
    return ref or None


@dataclass(frozen=True)
class PatientChanges:
    """Fields staff change; None leaves a field as it is, "" removes a phone, email or ref."""

    name: str | None = None
    phone: str | None = None
    email: str | None = None
    timezone: str | None = None
    locale: str | None = None
    channels: str | None = None
    ref: str | None = None


def require_not_forgotten(patient: Patient) -> None:
    """A forgotten patient's row stays for anonymous counts only: nothing new is planned."""
    if patient.forgotten_at is not None:
        raise UserError("patient", f"patient {patient.id} was forgotten; add them again")


def update_patient(db: DbSession, planner: Planner, patient: Patient, changes: PatientChanges,
                   *, country: str, locales: tuple[str, ...]) -> tuple[list[str], PlanChanges]:
    """Apply `changes` to everything not yet sent; returns the changed field names.

    Nothing is written if any field is wrong. A new phone or email clears its "invalid" mark.
    """
    require_not_forgotten(patient)
    new: dict[str, Any] = {}
    if changes.name is not None:
        new["name"] = _name(changes.name)
    if changes.phone is not None:
        new["phone"] = normalize_phone(changes.phone, country) if changes.phone.strip() else None
    if changes.email is not None:
        new["email"] = normalize_email(changes.email) if changes.email.strip() else None
    if changes.timezone is not None:
        zone(changes.timezone)
        new["timezone"] = changes.timezone
    if changes.locale is not None:
        new["locale"] = _locale(changes.locale, locales)
    if changes.ref is not None:
        new["ref"] = _free_ref(db, changes.ref, patient.id)
    phone, email = new.get("phone", patient.phone), new.get("email", patient.email)
    channels = patient.channels if changes.channels is None else changes.channels
    new["channels"] = parse_channels(channels, phone, email)
    changed = [name for name, value in new.items() if getattr(patient, name) != value]
    if not changed:
        return [], PlanChanges()
    now = planner.clock()
    for name in changed:
        setattr(patient, name, new[name])
    if "phone" in changed:
        patient.phone_invalid_at = None
    if "email" in changed:
        patient.email_invalid_at = None
    db.add(patient)
    record(db, now, "patient.updated", patient.id, ", ".join(changed))
    plan = replan_patient(db, planner, patient, f"patient updated ({', '.join(changed)})")
    return changed, plan


def set_opt_out(db: DbSession, planner: Planner, patient: Patient, channel: str,
                opted_out: bool = True, source: str = "") -> PlanChanges:
    """Record that the patient opted out of (or back in to) `channel`; pending rows follow."""
    if channel not in CHANNELS:
        raise UserError("channel", f"'{channel}' is not a channel; use sms or email")
    flag = f"{channel}_opted_out_at"
    if bool(getattr(patient, flag)) == opted_out:
        return PlanChanges()
    now = planner.clock()
    setattr(patient, flag, now if opted_out else None)
    db.add(patient)
    what = f"patient opted {'out of' if opted_out else 'back in to'} {channel}"
    record(db, now, f"patient.{'opted_out' if opted_out else 'opted_in'}", patient.id,
           f"{channel} ({source})" if source else channel)
    return replan_patient(db, planner, patient, what)


def close_route(db: DbSession, planner: Planner, patient: Patient, consequence: str,
                source: str) -> PlanChanges:
    """A provider's verdict closes a route (STOP, invalid number, refused address).

    Recorded in the history like a desk change, then the one planning rule decides what
    follows: pending messages on that route are cancelled, and email stands in only where
    the patient consented to email. `source` names the verdict, e.g. "Twilio 21610".
    """
    channel, flag, reason = CLOSED_BY[consequence]
    if getattr(patient, flag) is not None:
        return PlanChanges()
    now = planner.clock()
    setattr(patient, flag, now)
    db.add(patient)
    kind = "patient.opted_out" if consequence == SMS_OPTED_OUT else f"patient.{consequence}"
    record(db, now, kind, patient.id, f"{channel} ({source})")
    return replan_patient(db, planner, patient, f"{reason} ({source})")


def find_patient(db: DbSession, ident: str) -> Patient:
    """The patient whose clinic ref or numeric id is `ident` ("#12" means id 12 only)."""
    if ident.startswith("#") and ident[1:].isdigit():
        by_ref, by_id = None, get_by_id(db, Patient, int(ident[1:]))
    else:
        by_ref = db.exec(select(Patient).where(Patient.ref == ident)).first()
        by_id = get_by_id(db, Patient, int(ident)) if ident.isdigit() else None
    if by_ref is not None and by_id is not None and by_ref.id != by_id.id:
        raise UserError("patient", f"'{ident}' is patient {by_id.id}'s id and patient "
                        f"{by_ref.id}'s ref; write #{by_id.id} for the id")
    patient = by_ref or by_id
    if patient is None:
        raise UserError("patient", f"no patient with id or ref '{ident}'; add one with "
                        "`aftercare patient add`")
    return patient
