"""Usage records, and the timeout of each job (for backfill).

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
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("timeout_seconds", sa.Integer()))
        batch.add_column(sa.Column("account_group", sa.String(255), nullable=False, server_default="default"))
    op.create_table(
        "usage",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), nullable=False, unique=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("account_group", sa.String(255), nullable=False),
        sa.Column("gpu_type", sa.String(64), nullable=False),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.Column("cpu_seconds", sa.Float(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
    )
    op.create_index("ix_usage_finished", "usage", ["finished_at"])
    op.create_index("ix_usage_user_finished", "usage", ["user", "finished_at"])


def downgrade() -> None:
    op.drop_table("usage")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("account_group")
        batch.drop_column("timeout_seconds")
