"""Courses keep their spacing, messages their plan time and series number, changes their reason.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('patient', schema=None) as batch_op:
        batch_op.add_column(sa.Column('forgotten_at', sa.DateTime(), nullable=True))

    with op.batch_alter_table('course', schema=None) as batch_op:
        # Existing courses get the shortest spacing any shipped protocol uses.
        batch_op.add_column(sa.Column('spacing_days', sa.Integer(), nullable=False,
                                      server_default='7'))
    with op.batch_alter_table('course', schema=None) as batch_op:
        batch_op.alter_column('spacing_days', server_default=None)

    with op.batch_alter_table('session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('number_fixed', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('moves', sa.Integer(), nullable=False,
                                      server_default='0'))
    with op.batch_alter_table('session', schema=None) as batch_op:
        batch_op.alter_column('number_fixed', server_default=None)
        batch_op.alter_column('moves', server_default=None)

    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('occurrence', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('planned_at', sa.DateTime(), nullable=True))
    op.execute("UPDATE message SET planned_at = send_after")
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.alter_column('occurrence', server_default=None)
        batch_op.alter_column('planned_at', existing_type=sa.DateTime(), nullable=False)
        batch_op.drop_constraint('uq_message_session_step_channel', type_='unique')
        batch_op.create_unique_constraint('uq_message_session_step_occurrence_channel',
                                          ['session_id', 'step', 'occurrence', 'channel'])

    op.create_table('event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('course_id', sa.Integer(), nullable=True),
    sa.Column('session_id', sa.Integer(), nullable=True),
    sa.Column('message_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('detail', sa.String(length=500), nullable=False),
    sa.ForeignKeyConstraint(['course_id'], ['course.id'], ),
    sa.ForeignKeyConstraint(['message_id'], ['message.id'], ),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], ),
    sa.ForeignKeyConstraint(['session_id'], ['session.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_event_patient_id'), ['patient_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_event_patient_id'))
    op.drop_table('event')
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_constraint('uq_message_session_step_occurrence_channel', type_='unique')
        batch_op.create_unique_constraint('uq_message_session_step_channel',
                                          ['session_id', 'step', 'channel'])
        batch_op.drop_column('planned_at')
        batch_op.drop_column('occurrence')
    with op.batch_alter_table('session', schema=None) as batch_op:
        batch_op.drop_column('moves')
        batch_op.drop_column('number_fixed')
    with op.batch_alter_table('course', schema=None) as batch_op:
        batch_op.drop_column('spacing_days')
    with op.batch_alter_table('patient', schema=None) as batch_op:
        batch_op.drop_column('forgotten_at')
