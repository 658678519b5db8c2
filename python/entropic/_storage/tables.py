"""entropic's own tables, kept beside the user's table in a MetaData of their own.

- ``entropic_failures``: the last failure of each point that has not succeeded
  since, so a user can see what failed without having kept the exception;
- ``entropic_claims``: which sweeping process is running which point right now,
  so that processes sharing a store run each point once (see docs/sweeps.md).

Both are keyed by (table_name, id): several models may share one database.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["CLAIMS", "FAILURES", "METADATA"]

METADATA = sa.MetaData()

FAILURES = sa.Table(
    "entropic_failures",
    METADATA,
    sa.Column("table_name", sa.String(255), primary_key=True),
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("exc_type", sa.String(255), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("traceback", sa.Text, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("failed_at", sa.DateTime(timezone=False), nullable=False),
    sa.Column("elapsed_seconds", sa.Float, nullable=False),
)

CLAIMS = sa.Table(
    "entropic_claims",
    METADATA,
    sa.Column("table_name", sa.String(255), primary_key=True),
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False, index=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("claimed_at", sa.DateTime(timezone=False), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=False), nullable=False),
)
