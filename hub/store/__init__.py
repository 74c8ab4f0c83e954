"""Hub storage: SQLite by default, PostgreSQL at scale, one schema, versioned migrations."""

from hub.store.database import Database, Row, sqlite_url

__all__ = ["Database", "Row", "sqlite_url"]
