"""The audit writer's hot statements, compiled once by SQLAlchemy and run on the driver's cursor.

Why: a unit's audit trail is about 40 small statements. Through ``Connection.execute`` each one pays
SQLAlchemy's execution context, events and result set-up (50-70 us here), which made the audit
writer, not the device or the wire, the slowest part of a unit (issue 8: 0.9 ms of bookkeeping per
group commit). The driver itself runs the same statement in 5-10 us.

So the statement is still written in SQLAlchemy Core and compiled by SQLAlchemy for the engine's
dialect (SQL text, parameter order, ``FOR UPDATE`` on PostgreSQL only), and each parameter and result
column still goes through its type's own bind and result processors
(:meth:`TypeEngine.bind_processor`, :meth:`TypeEngine.result_processor`), so a value is stored and
read exactly as SQLAlchemy would store and read it. Only the per-call machinery is skipped. The
statements run on the DBAPI connection of the transaction SQLAlchemy began (``BEGIN IMMEDIATE`` on
SQLite), so they are part of the same transaction, savepoints and commit. Driver errors are wrapped
into SQLAlchemy's exception classes (:meth:`DBAPIError.instance`), so the store translates them in its
one place as before.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["DriverStatement", "driver_cursor", "driver_savepoint"]

_Processor = Callable[[Any], Any]


class _Compiled(NamedTuple):
    sql: str
    order: tuple[str, ...] | None
    """Parameter names in order for a positional paramstyle (qmark), None for a named one."""
    defaults: dict[str, Any]
    binds: dict[str, _Processor]
    row: Callable[..., Any] | None
    """A named tuple class of the result columns (SELECT, or INSERT ... RETURNING), else None."""
    results: tuple[_Processor | None, ...]


class DriverStatement:
    """One Core statement, compiled per (dialect, set of columns given) and run on a DBAPI cursor.

    For INSERT and UPDATE the compiled SQL depends on which columns the call sets, so each distinct
    set of parameter names is compiled once (``column_keys``) and cached. Result rows are named
    tuples with the selected column labels as attributes, as SQLAlchemy's own rows read.
    """

    def __init__(self, statement: ClauseElement, *, varying_columns: bool = False) -> None:
        self._statement = statement
        self._varying = varying_columns
        self._cache: dict[tuple[str, frozenset[str] | None], _Compiled] = {}

    def _compiled(self, dialect: Dialect, given: Iterable[str]) -> _Compiled:
        keys = frozenset(given)
        column_keys = keys if self._varying else None
        cache_key = (dialect.name, column_keys)
        found = self._cache.get(cache_key)
        if found is not None:
            return found
        kw: dict[str, Any] = {"dialect": dialect}
        if column_keys is not None:
            kw["column_keys"] = sorted(column_keys)
        compiled = self._statement.compile(**kw)
        assert isinstance(compiled, SQLCompiler)
        binds: dict[str, _Processor] = {}
        defaults: dict[str, Any] = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                binds[name] = processor
            if not bind.required and bind.effective_value is not None:
                defaults[name] = bind.effective_value
        for column in [*compiled.insert_prefetch, *compiled.update_prefetch]:
            # A Python-side column default SQLAlchemy would fill in: only plain values are supported.
            default = column.default if column.key not in keys else None
            if default is not None and default.is_scalar:
                defaults[column.key] = default.arg  # type: ignore[attr-defined]
            elif default is not None:
                raise ValueError(f"{column} has a computed default, which the driver path cannot fill")
        columns: list[str] = []
        results: list[_Processor | None] = []
        exported = getattr(self._statement, "exported_columns", None)
        for label, column in zip(exported.keys(), exported, strict=True) if exported else ():
            columns.append(label)
            results.append(column.type.dialect_impl(dialect).result_processor(dialect, None))
        row = namedtuple("Row", columns, rename=True) if columns else None
        order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        found = _Compiled(compiled.string, order, defaults, binds, row, tuple(results))
        self._cache[cache_key] = found
        return found

    @staticmethod
    def _params(compiled: _Compiled, values: Mapping[str, Any]) -> Any:
        merged = {**compiled.defaults, **values} if compiled.defaults else dict(values)
        for name, processor in compiled.binds.items():
            if name in merged and merged[name] is not None:
                merged[name] = processor(merged[name])
        if compiled.order is not None:
            try:
                return tuple(merged[name] for name in compiled.order)
            except KeyError as exc:
                raise ValueError(f"no value for parameter {exc} of {compiled.sql!r}") from None
        return merged

    def execute(self, conn: Connection, values: Mapping[str, Any] | None = None) -> list[Any]:
        """Run once; returns the rows (none for INSERT/UPDATE without RETURNING)."""
        values = values or {}
        dialect = conn.dialect
        compiled = self._compiled(dialect, values.keys())
        params = self._params(compiled, values)
        cursor = driver_cursor(conn)
        try:
            cursor.execute(compiled.sql, params)
            if compiled.row is None:
                return []
            raw = cursor.fetchall()
        except dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(compiled.sql, params, exc, dialect.loaded_dbapi.Error,
                                      dialect=dialect) from exc
        finally:
            cursor.close()
        make, procs = compiled.row, compiled.results
        if not any(procs):
            return [make(*row) for row in raw]
        return [make(*[v if p is None or v is None else p(v) for p, v in zip(procs, row, strict=True)])
                for row in raw]

    def execute_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run once per row of ``rows`` (all with the same keys) in one driver ``executemany``."""
        if not rows:
            return
        dialect = conn.dialect
        compiled = self._compiled(dialect, rows[0].keys())
        params = [self._params(compiled, row) for row in rows]
        cursor = driver_cursor(conn)
        try:
            cursor.executemany(compiled.sql, params)
        except dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(compiled.sql, params, exc, dialect.loaded_dbapi.Error,
                                      dialect=dialect, ismulti=True) from exc
        finally:
            cursor.close()

    def one(self, conn: Connection, values: Mapping[str, Any] | None = None) -> Any:
        rows = self.execute(conn, values)
        if len(rows) != 1:
            raise LookupError(f"expected one row, got {len(rows)}")
        return rows[0]

    def first(self, conn: Connection, values: Mapping[str, Any] | None = None) -> Any | None:
        rows = self.execute(conn, values)
        return rows[0] if rows else None


def driver_cursor(conn: Connection) -> Any:
    """A new cursor on the DBAPI connection under ``conn`` (inside ``conn``'s transaction)."""
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


def _run(conn: Connection, sql: str) -> None:
    dialect = conn.dialect
    cursor = driver_cursor(conn)
    try:
        cursor.execute(sql)
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error, dialect=dialect) from exc
    finally:
        cursor.close()


@contextmanager
def driver_savepoint(conn: Connection, name: str) -> Iterator[None]:
    """A SAVEPOINT on the driver connection: rolled back (and released) if the block raises.

    What ``Connection.begin_nested`` does, without its per-call cost; the statements are the same on
    SQLite and PostgreSQL. Only for Core and driver writes: an ORM session above the connection does
    not know about it. If the savepoint cannot be rolled back (SQLite rolls back the whole transaction
    on some I/O errors), that error is raised instead of the block's, so the caller never goes on in
    a transaction that is gone.
    """
    _run(conn, f"SAVEPOINT {name}")
    try:
        yield
    except BaseException as exc:
        try:
            _run(conn, f"ROLLBACK TO SAVEPOINT {name}")
            _run(conn, f"RELEASE SAVEPOINT {name}")
        except DBAPIError as rollback_failed:
            raise rollback_failed from exc
        raise
    _run(conn, f"RELEASE SAVEPOINT {name}")
