"""Indexes for the console: messages by due time across statuses, sessions by time.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.create_index('ix_message_send_after', ['send_after'], unique=False)
    with op.batch_alter_table('session', schema=None) as batch_op:
        batch_op.create_index('ix_session_at', ['at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('session', schema=None) as batch_op:
        batch_op.drop_index('ix_session_at')
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_index('ix_message_send_after')
