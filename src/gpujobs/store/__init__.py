"""The store: the one source of truth for jobs (SQLAlchemy 2; SQLite by default, PostgreSQL by URL)."""

from .database import Store
from .records import JobRecord

__all__ = ["JobRecord", "Store"]
