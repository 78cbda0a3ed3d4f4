"""What the reconciler needs: which jobs hold resources, which were handed to the executor, memory
requests, idempotency keys and a heartbeat row that tells whether the database takes writes.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("holding", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("launched_at", sa.DateTime()))
        batch.add_column(sa.Column("memory_request", sa.Float(), nullable=False, server_default="0"))
    # Jobs admitted before this migration hold what they were given until the executor says otherwise,
    # and were handed to the executor already (a cancel must stop them; a relaunch adopts them).
    op.execute(
        sa.text(
            "UPDATE jobs SET holding = :yes, launched_at = COALESCE(admitted_at, created_at)"
            " WHERE status IN ('pending', 'running')"
        ).bindparams(yes=True)
    )
    op.create_index("ix_jobs_holding", "jobs", ["holding"])
    op.create_table(
        "idempotency_keys",
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_idempotency_created", "idempotency_keys", ["created_at"])
    op.create_table(
        "heartbeat",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("heartbeat")
    op.drop_table("idempotency_keys")
    op.drop_index("ix_jobs_holding", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("memory_request")
        batch.drop_column("launched_at")
        batch.drop_column("holding")
