"""Claims carry a token; databases stamped at the first release of 0002 get `session.moves`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

0002 gained `session.moves` after it had been committed, so a database upgraded with the
earlier 0002 is stamped 0002 without that column. This revision adds it where it is
missing (committed migrations never change again; tests/test_migrations.py guards them).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    session_columns = {c['name'] for c in sa.inspect(op.get_bind()).get_columns('session')}
    if 'moves' not in session_columns:
        with op.batch_alter_table('session', schema=None) as batch_op:
            batch_op.add_column(sa.Column('moves', sa.Integer(), nullable=False,
                                          server_default='0'))
        with op.batch_alter_table('session', schema=None) as batch_op:
            batch_op.alter_column('moves', server_default=None)

    with op.batch_alter_table('message', schema=None) as batch_op:
        # Who holds a row in `sending`: every write after the claim is guarded by it.
        batch_op.add_column(sa.Column('claim_token', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_column('claim_token')
