"""The ``sql`` built-in's own settings (``UPHOOKS_SQL_*``), apart from handlers/sql.py: that
module needs SQLAlchemy (an extra) to import, and a worker must be able to ask whether the
plugin is enabled without it."""

from __future__ import annotations

from functools import lru_cache

from handlers._settings import BuiltinSettings, builtin_config


class SqlSettings(BuiltinSettings):
    model_config = builtin_config("UPHOOKS_SQL_")

    # A SQLAlchemy URL; postgresql:// uses psycopg 3 (the postgres extra).
    url: str = "sqlite:///var/uphooks.sqlite3"


@lru_cache(maxsize=1)
def sql_settings() -> SqlSettings:
    return SqlSettings()


def enabled() -> bool:
    return sql_settings().enabled
