"""One paging shape for the auditor's lists of log entries (/events, /control-events,
/security-events): in log order after `after_seq`, at most `limit` a page, and the seq to ask
after for the next page (null once a page comes back short)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query

MAX_PAGE = 1000


@dataclass(frozen=True)
class LogPage:
    after_seq: int
    limit: int

    def answer(self, key: str, found: list[dict[str, Any]]) -> dict[str, Any]:
        """The page's entries under `key`, and where the next page starts. A full page may be
        the last; the next one then comes back empty."""
        full = len(found) == self.limit
        return {key: found, "next_after_seq": found[-1]["seq"] if full else None}


async def log_page(
    after_seq: Annotated[int, Query(ge=0, description="Entries after this log seq")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Entries a page")] = 100,
) -> LogPage:
    return LogPage(after_seq, limit)


Page = Annotated[LogPage, Depends(log_page)]
