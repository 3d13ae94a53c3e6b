"""Calendar months in UTC: the unit of partitioning."""

from __future__ import annotations

from datetime import datetime, timezone


def month_key(ts: datetime) -> str:
    """'YYYY-MM-01' of the UTC month holding ts (naive times are taken as UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    ts = ts.astimezone(timezone.utc)
    return f"{ts.year:04d}-{ts.month:02d}-01"  # strftime's %Y does not pad years before 1000 on Linux


def month_bounds(month: str) -> tuple[datetime, datetime]:
    start = datetime.strptime(month, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end
