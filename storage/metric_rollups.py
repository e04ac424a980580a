"""The histograms of /metrics as rollups: bucket counts kept in `metric_rollups`, added to in
the same transaction as what they measure, so that a scrape costs the same with a million
transcribed chunks as with ten (it read every chunk before). Counts only grow, as a
Prometheus histogram's must: deleting a meeting does not take its observations back."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from storage.models import MetricRollup
from storage.write_transaction import Transaction

INF = 1e308  # the +Inf bucket (a float both databases store)
RTF_BUCKETS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
LAG_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
HISTOGRAMS: dict[str, tuple[float, ...]] = {
    "transcription_rtf": RTF_BUCKETS,  # transcription time / audio time, per chunk
    "chunk_lag_s": LAG_BUCKETS,  # upload complete -> transcribed, per chunk
    "meeting_end_s": LAG_BUCKETS,  # finalize -> complete, per meeting
}


@dataclass(frozen=True)
class HistogramCounts:
    buckets: list[tuple[float, int]]  # (upper bound, observations at or below it)
    count: int
    sum: float


def seed_rows() -> list[dict[str, object]]:
    """Every bucket of every histogram, at zero (the migration inserts them)."""
    return [
        {"name": name, "le": float(le), "count": 0, "sum": 0.0}
        for name, bounds in HISTOGRAMS.items()
        for le in (*bounds, INF)
    ]


async def observe(session: Transaction, name: str, value: float) -> None:
    await session.execute(
        update(MetricRollup)
        .where(MetricRollup.name == name, MetricRollup.le >= value)
        .values(count=MetricRollup.count + 1, sum=MetricRollup.sum + value)
        .execution_options(synchronize_session=False)
    )


async def histograms(session: Transaction) -> dict[str, HistogramCounts]:
    rows = (
        await session.execute(
            select(MetricRollup.name, MetricRollup.le, MetricRollup.count, MetricRollup.sum)
        )
    ).all()
    out: dict[str, HistogramCounts] = {}
    for name in HISTOGRAMS:
        mine = sorted((le, count, total) for n, le, count, total in rows if n == name)
        finite = [(le, count) for le, count, _ in mine if le < INF]
        everything = next(((c, t) for le, c, t in mine if le >= INF), (0, 0.0))
        out[name] = HistogramCounts(finite, everything[0], everything[1])
    return out
