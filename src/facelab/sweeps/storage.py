"""The study database: any SQLAlchemy URL (SQLite in the sweep folder by default, PostgreSQL for workers on
several machines), reached with a short timeout and named without its password in every message and file.

A PostgreSQL password is best kept out of the URL (libpq reads ``PGPASSWORD`` and ``~/.pgpass``); one given in
the URL is used to connect but never written down: the sweep folder and the study record the URL without it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from facelab.errors import FacelabError
from facelab.utils.secrets import MASK, has_secret, mask_secrets

if TYPE_CHECKING:
    import optuna

DATABASE = "study.db"
CONNECT_TIMEOUT_S = 10  # a server that does not answer in this time is reported, not waited for
SQLITE_BUSY_TIMEOUT_S = 60  # SQLite: how long a writer waits for another worker's write to finish
#: the environment variable that carries the URL to worker processes (a password never shows in `ps`)
STORAGE_ENV = "FACELAB_SWEEP_STORAGE"


class StorageError(FacelabError):
    """The study database cannot be reached or opened."""


def default_storage(sweep_dir: str | Path) -> str:
    """``sqlite:///<sweep folder>/study.db``: nothing to start, one machine."""
    return f"sqlite:///{(Path(sweep_dir) / DATABASE).resolve()}"


def without_password(url: str) -> str:
    """``url`` with its password masked as ``***``, for messages (:func:`facelab.utils.secrets.mask_secrets`)."""
    return mask_secrets(url)


def strip_password(url: str) -> str:
    """``url`` without its password at all (what the sweep folder and the study record): libpq then takes it from
    ``PGPASSWORD`` or ``~/.pgpass``. A password-like query parameter (``?password=...``) is dropped too; a URL
    that cannot be parsed is recorded masked."""
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    if not has_secret(url):
        return url
    try:
        p = make_url(url)
    except (ArgumentError, ValueError):
        return mask_secrets(url)
    if p.host and "@" in p.host:  # a raw '@' in the password: SQLAlchemy took its tail for the host
        return mask_secrets(url)
    query = {k: v for k, v in p.query.items() if not has_secret(f"{k}=x")}
    # (URL.set(password=None) keeps the password in SQLAlchemy 2.1: None there means "unchanged")
    bare = URL.create(p.drivername, username=p.username, host=p.host, port=p.port, database=p.database, query=query)
    shown = bare.render_as_string(hide_password=False)
    return shown if not has_secret(shown) else mask_secrets(shown)


def _engine_kwargs(url: str) -> dict:
    """Short connection timeouts per database (a wrong host must fail in seconds, not minutes)."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    if url.startswith("mysql"):
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    return {}


def _hint(url: str) -> str:
    if url.startswith("sqlite"):
        return "check that the folder exists and is writable"
    return ("check the host, port, database name and that the server runs; give the password with --storage URL, "
            f"the {STORAGE_ENV} variable, PGPASSWORD or ~/.pgpass")


def check_reachable(url: str) -> None:
    """Connect once (within :data:`CONNECT_TIMEOUT_S`) so that a wrong URL is one clear error before anything starts.

    Raises:
        StorageError: a malformed URL, a missing database driver, a database that does not answer, or a SQLite file
            that holds another application's tables, naming the URL without its password.
    """
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    shown = without_password(url)
    try:
        engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
    except (NoSuchModuleError, ImportError) as e:  # (NoSuchModuleError is an ArgumentError: first)
        raise StorageError(f"storage {shown}: no driver for it ({_scrub(str(e), url)}); e.g. sqlite:///runs/study.db "
                           "or, for PostgreSQL, postgresql+psycopg://user@host:5432/db with psycopg installed") from None
    except (ArgumentError, ValueError) as e:
        raise StorageError(f"storage {shown!r} is not a database URL ({_scrub(str(e), url)}); e.g. "
                           "sqlite:///runs/study.db or postgresql+psycopg://user@host:5432/db") from None
    try:
        with engine.connect() as conn:
            if url.startswith("sqlite"):
                tables = sqlalchemy.inspect(conn).get_table_names()
                if tables and "studies" not in tables:  # someone's own database: facelab adds nothing to it
                    raise StorageError(f"storage {shown} is a SQLite database of something else (tables "
                                       f"{', '.join(sorted(tables)[:5])}{' ...' if len(tables) > 5 else ''}); give "
                                       "the study a database file of its own (or leave storage out: the sweep folder's "
                                       "study.db)")
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")  # readers do not block the writer; several write
    except SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise StorageError(f"cannot reach the study database {shown}: {_scrub(reason, url)}; {_hint(url)}") from None
    except ImportError as e:
        raise StorageError(f"storage {shown}: its driver cannot load ({_scrub(str(e), url)})") from None
    finally:
        engine.dispose()


def _scrub(text: str, url: str) -> str:
    """``text`` without the URL's password, should a driver quote it (or the URL, whole or in part)."""
    from sqlalchemy.engine import make_url

    text = mask_secrets(text)
    try:
        password = make_url(url).password
    except Exception:
        return text
    return text.replace(str(password), MASK) if password else text


def open_storage(url: str, *, heartbeat_interval: int | None = None,
                 grace_period: int | None = None) -> optuna.storages.RDBStorage:
    """The study storage at ``url``, checked to be reachable; with heartbeats, a trial whose worker stopped
    beating for ``grace_period`` seconds is FAILED by the next worker that looks.

    Raises:
        StorageError: see :func:`check_reachable`; also a database of another Optuna schema.
    """
    import optuna

    from facelab.sweeps.algorithms import quiet_optuna

    quiet_optuna()
    check_reachable(url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url),
                                              heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    except Exception as e:  # e.g. a database written by another Optuna version (schema migration needed)
        reason = _scrub(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, url)
        raise StorageError(f"cannot open the study database {without_password(url)}: {reason}") from None
