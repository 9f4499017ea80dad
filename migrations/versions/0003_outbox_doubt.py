"""outbox: doubt (a message re-sent after its sender died mid-send), the leased-rows index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('doubt', sa.String(length=200), nullable=True))
        batch_op.create_index('ix_outbox_leased', ['lease_owner'], unique=False,
                              postgresql_where=sa.text('lease_owner IS NOT NULL'),
                              sqlite_where=sa.text('lease_owner IS NOT NULL'))


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_leased')
        batch_op.drop_column('doubt')
