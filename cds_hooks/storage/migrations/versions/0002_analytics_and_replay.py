"""What each card said (indicator, contributors) for the feedback report, and the shared ``jti`` replay table.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("issued_card") as batch:
        batch.add_column(sa.Column("indicator", sa.String(16)))
        batch.add_column(sa.Column("contributors", sa.Text))
    op.create_index("issued_card_issued_at", "issued_card", ["issued_at"])
    op.create_table(
        "replay_jti",
        sa.Column("token_key", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("replay_jti_expires_at", "replay_jti", ["expires_at"])


def downgrade() -> None:
    op.drop_table("replay_jti")
    op.drop_index("issued_card_issued_at", "issued_card")
    with op.batch_alter_table("issued_card") as batch:
        batch.drop_column("contributors")
        batch.drop_column("indicator")
