"""Patients: adding them with validated contact data, and finding them by id or clinic ref."""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session as DbSession
from sqlmodel import select

from aftercare.clock import Clock, zone
from aftercare.errors import UserError
from aftercare.models import Patient
from aftercare.protocols import CHANNELS


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
    name = new.name.strip()
    if not name:
        raise UserError("name", "must not be empty")
    phone = normalize_phone(new.phone, country) if new.phone else None
    email = normalize_email(new.email) if new.email else None
    timezone = new.timezone or default_timezone
    zone(timezone)
    locale = new.locale or default_locale
    if locale not in locales:
        raise UserError("locale", f"'{locale}' has no message templates; use one of "
                        f"{', '.join(locales)}")
    channels = parse_channels(new.channels, phone, email)
    ref = new.ref.strip() if new.ref else None
    if ref:
        taken = db.exec(select(Patient).where(Patient.ref == ref)).first()
        if taken is not None:
            raise UserError("ref", f"'{ref}' already belongs to patient {taken.id}")
    patient = Patient(name=name, phone=phone, email=email, timezone=timezone, locale=locale,
                      channels=channels, ref=ref, created_at=clock())
    db.add(patient)
    db.commit()
    db.refresh(patient)
    return patient


def find_patient(db: DbSession, ident: str) -> Patient:
    """The patient whose clinic ref or numeric id is `ident` ("#12" means id 12 only)."""
    if ident.startswith("#") and ident[1:].isdigit():
        by_ref, by_id = None, db.get(Patient, int(ident[1:]))
    else:
        by_ref = db.exec(select(Patient).where(Patient.ref == ident)).first()
        by_id = db.get(Patient, int(ident)) if ident.isdigit() else None
    if by_ref is not None and by_id is not None and by_ref.id != by_id.id:
        raise UserError("patient", f"'{ident}' is patient {by_id.id}'s id and patient "
                        f"{by_ref.id}'s ref; write #{by_id.id} for the id")
    patient = by_ref or by_id
    if patient is None:
        raise UserError("patient", f"no patient with id or ref '{ident}'; add one with "
                        "`aftercare patient add`")
    return patient
