"""Reachability: which channels may carry a step for a patient now, and what closes a route."""

from __future__ import annotations

from aftercare.errors import EMAIL_INVALID, PHONE_INVALID, SMS_OPTED_OUT
from aftercare.models import Patient

# What a provider's verdict closes: (channel, the patient's flag, the history's words).
CLOSED_BY = {PHONE_INVALID: ("sms", "phone_invalid_at", "phone number invalid"),
             SMS_OPTED_OUT: ("sms", "sms_opted_out_at", "patient opted out of sms"),
             EMAIL_INVALID: ("email", "email_invalid_at", "email address refused")}


def routes(step_channels: tuple[str, ...], patient: Patient) -> list[str]:
    """The channels a step goes on for this patient now: those it names that the patient
    consented to and can be reached on, with email standing in for a dead SMS route only
    where the patient consented to email. Planning and sending both ask this."""
    chosen = [c for c in step_channels if patient.unreachable_reason(c) is None]
    sms_dead = patient.phone_invalid_at or patient.sms_opted_out_at
    if "sms" in step_channels and "email" not in chosen and sms_dead \
            and patient.unreachable_reason("email") is None:
        chosen.append("email")
    return chosen
