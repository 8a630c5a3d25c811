"""The repository's transactions: one per call; write ones take SQLite's write lock up front."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ["WRITE", "Transactions"]

# Connection execution option read by the SQLite "begin" hook in db.py: BEGIN IMMEDIATE.
WRITE = "storyloom_write"


class Transactions:
    """Holds the session factory; ``reading()`` and ``writing()`` open one transaction each.

    A block that raises rolls back entirely, so bad input never leaves a half-written row.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            await session.connection(execution_options={WRITE: True})
            yield session

    @staticmethod
    def dialect(session: AsyncSession) -> str:
        return session.get_bind().dialect.name
