"""Privacy: forgetting a patient on request while keeping anonymous counts."""

from __future__ import annotations

from sqlalchemy import event, update
from sqlmodel import Session as DbSession
from sqlmodel import col

from aftercare.db import flush_to_disk
from aftercare.history import record
from aftercare.models import Event, Message, Notice, NoticeKind, Patient, Reply, ReplyStatus
from aftercare.planning import PlanChanges, Planner, replan_patient


def forget(db: DbSession, planner: Planner, patient: Patient) -> PlanChanges:
    """Erase name, contact data, clinic ref and every text sent or written about the patient.

    Pending messages are cancelled; rows stay (without personal data) so counts of
    sessions and messages remain true. Forgetting twice changes nothing.
    """
    if patient.forgotten_at is not None:
        return PlanChanges()
    now = planner.clock()
    patient.forgotten_at = now
    patient.name, patient.ref, patient.phone, patient.email = "(forgotten)", None, None, None
    db.add(patient)
    plan = replan_patient(db, planner, patient, "patient forgotten")
    # Provider error texts can quote the phone number; staff reasons are free text.
    db.exec(update(Message).where(col(Message.patient_id) == patient.id)
            .values(body=None, subject=None, provider_id=None, last_error=None))
    db.exec(update(Event).where(col(Event.patient_id) == patient.id).values(detail=""))
    # What the patient texted us, from which number, and what we or staff answered.
    # Open replies are closed too: nothing about a forgotten patient wakes anyone.
    db.exec(update(Reply).where(col(Reply.patient_id) == patient.id,
                                col(Reply.status).in_([ReplyStatus.OPEN,
                                                       ReplyStatus.ACKNOWLEDGED]))
            .values(status=ReplyStatus.CLOSED, closed_at=now))
    db.exec(update(Reply).where(col(Reply.patient_id) == patient.id)
            .values(body=None, from_number=None, to_number=None, answer=None, note=None))
    # Staff replies to the patient and alerts about the patient's replies name them.
    db.exec(update(Notice).where(col(Notice.patient_id) == patient.id)
            .values(body=None, subject=None))
    db.exec(update(Notice).where(col(Notice.patient_id) == patient.id,
                                 col(Notice.kind) == NoticeKind.STAFF_REPLY)
            .values(to_address=None))
    record(db, now, "patient.forgotten", patient.id)
    # The erased values stay in SQLite's write-ahead log until a checkpoint, which cannot
    # run inside the caller's transaction: it runs once the caller has committed.
    # `.engine`: the bind is typed Engine | Connection; an Engine's .engine is itself.
    engine = db.get_bind().engine
    event.listen(db, "after_commit", lambda _session: flush_to_disk(engine), once=True)
    return plan
