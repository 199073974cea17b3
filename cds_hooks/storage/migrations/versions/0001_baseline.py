"""Baseline: the feedback store as version 0.1.0 created it (issued cards and feedback).

A database made by 0.1.0 already has these tables (without an ``alembic_version``): they are kept as they are.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "issued_card" not in existing:
        op.create_table(
            "issued_card",
            sa.Column("card_uuid", sa.String(64), primary_key=True),
            sa.Column("service_id", sa.String(100), nullable=False),
            sa.Column("patient_key", sa.String(64), nullable=False),
            sa.Column("card_key", sa.Text, nullable=False),
            sa.Column("issued_at", sa.String(32), nullable=False),
        )
        op.create_index("issued_card_patient", "issued_card", ["patient_key", "card_key"])
    if "feedback" not in existing:
        op.create_table(
            "feedback",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("service_id", sa.String(100), nullable=False),
            sa.Column("card_uuid", sa.String(64), nullable=False),
            sa.Column("outcome", sa.String(16), nullable=False),
            sa.Column("accepted_suggestions", sa.Text),
            sa.Column("reason_system", sa.Text),
            sa.Column("reason_code", sa.String(100)),
            sa.Column("has_comment", sa.Integer, nullable=False, server_default="0"),
            sa.Column("outcome_timestamp", sa.String(32), nullable=False),
            sa.Column("received_at", sa.String(32), nullable=False),
        )
        op.create_index("feedback_card", "feedback", ["card_uuid"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("issued_card")
