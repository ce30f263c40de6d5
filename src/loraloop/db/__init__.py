"""Foundation: database engine, tables and migrations."""

from loraloop.db.engine import Database, utcnow
from loraloop.db.migrate import upgrade

__all__ = ["Database", "upgrade", "utcnow"]
