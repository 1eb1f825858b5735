"""The report's write-path section: one relay, sharded relays and CDC, side by side.

Kept apart from bench.report so each comparison's rows sit next to the words that
explain them; the figures come from the same results/latest.json.
"""

from __future__ import annotations

from typing import Any


def _table(header: list[str], rows: list[list[Any]]) -> str:
    from bench.report import _table as table

    return table(header, rows)


def sharded_section(results: dict) -> list[str]:
    runs = (results.get("sharded_relay") or {}).get("runs") or []
    if not runs:
        return []
    bound = results["sharded_relay"].get("relay_bound_events_per_s_per_relay_core")
    return [
        "## Sharded relays (OUTBOX_RELAY_SHARDS)",
        "",
        "Drain of a vacuumed outbox of 1 KB rows by 1, 2 and 3 `relay_outbox` processes "
        "sharing 3 shards, through one protocol (bench/sharded_relay.py: the relays "
        "stand by while the benchmark holds every shard's lock, the clock starts when "
        "it lets go). CPU per 1,000 events over the drain, read from /proc: every "
        "process shares the machine's 2 cores.",
        "",
        _table(
            [
                "relays",
                "shards",
                "events/s",
                "relay CPU ms / 1,000",
                "PostgreSQL CPU ms / 1,000",
                "broker CPU ms / 1,000",
            ],
            [
                [
                    r.get("relays"),
                    r.get("shards"),
                    r.get("events_per_second"),
                    r.get("relay_cpu_ms_per_1000"),
                    r.get("postgres_cpu_ms_per_1000"),
                    r.get("broker_cpu_ms_per_1000"),
                ]
                for r in runs
            ],
        ),
        "",
        "What it predicts: a relay's own CPU per event bounds what one relay sends with "
        f"a core to itself, about {bound} events/s here; on a machine of its own each "
        "relay adds about that, until PostgreSQL (whose work per event the table shows "
        "growing with sharding, because each relay's read walks past the rows of the "
        "shards it does not lead) or the brokers are the limit. On these two shared "
        "cores the relays, PostgreSQL and the broker compete, so the measured drain "
        "stays flat.",
        "",
    ]
