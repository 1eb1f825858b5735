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


def _n(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        value = round(value, 2)
    return f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"


def _rss(sample: dict | None, *names: str) -> float | None:
    """Total VmRSS (MB) of the processes under `names` in a steady-state sample."""
    if not sample:
        return None
    total = 0.0
    for name in names:
        part = sample.get(name)
        for proc in part if isinstance(part, list) else [part]:
            if isinstance(proc, dict) and proc.get("rss_mb") is not None:
                total += proc["rss_mb"]
    return round(total, 1)


def _anon(sample: dict | None, *names: str) -> float | None:
    if not sample:
        return None
    total = 0.0
    for name in names:
        part = sample.get(name)
        for proc in part if isinstance(part, list) else [part]:
            if isinstance(proc, dict) and proc.get("rss_anon_mb") is not None:
                total += proc["rss_anon_mb"]
    return round(total, 1)


def _latency(cell: dict | None) -> str:
    if not cell:
        return "–"

    def ms(q: str) -> str:
        v = cell.get(q)
        return _n(round(v, 1) if isinstance(v, int | float) else v)

    rate = cell.get("achieved_rate")
    return f"p50 {ms('p50')} ms, p99 {ms('p99')} ms (achieved {_n(rate)}/s)"


def _recovery(r: dict | None) -> str:
    if not r:
        return "–"
    return (
        f"events flow again after {_n(r.get('resumed_s'))} s, backlog caught up after "
        f"{_n(r.get('caught_up_s'))} s (lag before the kill: p50 "
        f"{_n(r.get('lag_before_kill_p50_ms'))} ms)"
    )


def _duplicates(r: dict | None) -> str:
    if not r:
        return "–"
    return f"{_n(r.get('duplicates'))} (lost {_n(r.get('lost'))} of {_n(r.get('written'))})"


OPERATIONS = {
    "polling": (
        "run `manage.py relay_outbox` under a supervisor (one per machine, or "
        "standbys / OUTBOX_RELAY_SHARDS); watch the outbox's pending rows and age "
        "(`outbox_*` metrics), nothing else to install"
    ),
    "cdc": (
        "run a Kafka Connect worker (JVM, Debezium jars, its three topics) and "
        "`cdc_connector register`; watch the connector and task state "
        "(`cdc_connector status`, restart failed tasks) and the slot's retained WAL "
        "(an idle or abandoned slot keeps the cluster's WAL); `delete --drop-slot` "
        "when going back"
    ),
}


def cdc_section(results: dict) -> list[str]:
    """Polling vs CDC: the same figures side by side, from one run (bench.cdc,
    bench.pipeline's cdc mode)."""
    cdc = results.get("cdc") or {}
    if not cdc:
        return []
    g = lambda *p: _get(results, *p)  # noqa: E731
    polling_drain = g("cdc", "polling", "drain", "events_per_second")
    polling_drain_src = "this step's 1 relay, 1 shard"
    if polling_drain is None:
        runs = g("sharded_relay", "runs") or []
        polling_drain = runs[0].get("events_per_second") if runs else None
        polling_drain_src = "sharded_relay.runs[0]"
    cdc_drain = g("cdc", "cdc", "drain") or {}
    restart = g("cdc", "polling", "recovery_restart")
    standby = g("cdc", "polling", "recovery_standby")
    cdc_rec = g("cdc", "cdc", "recovery")
    p_mem = (restart or {}).get("steady_state")
    c_mem = (cdc_rec or {}).get("steady_state")
    poll_lat = results.get("pipeline_e2e_latency_ms") or {}
    cdc_lat = results.get("cdc_e2e_latency_ms") or {}
    rows = [
        [
            "drain, 1 KB events (events/s)",
            f"{_n(polling_drain)} ({polling_drain_src})",
            f"{_n(cdc_drain.get('events_per_second'))} first → last arrival; "
            f"{_n(cdc_drain.get('events_per_second_from_resume'))} from the resume",
        ],
        *[
            [
                f"commit → SeatReserved handler commit at {label} reservations/s "
                "(two events each)",
                _latency(poll_lat.get(phase)),
                _latency(cdc_lat.get(phase)),
            ]
            for phase, label in (("rate_100", "100"), ("rate_1000", "1,000"))
        ],  # fmt: skip
        [
            "recovery after kill -9 at ~1,000 events/s",
            f"supervisor restart ({_n((restart or {}).get('restart_delay_s'))} s "
            f"delay): {_recovery(restart)}; hot standby: {_recovery(standby)}",
            f"worker restarted: {_recovery(cdc_rec)}; a second worker as standby: "
            f"{g('cdc', 'cdc', 'standby_note') or '–'}",
        ],
        [
            "duplicates after the crash (messages − distinct events)",
            f"restart: {_duplicates(restart)}; standby: {_duplicates(standby)}",
            _duplicates(cdc_rec),
        ],
        [
            "memory, VmRSS (RssAnon) MB",
            f"relay_outbox {_n(_rss(p_mem, 'relay_processes'))} "
            f"({_n(_anon(p_mem, 'relay_processes'))}); its PostgreSQL backends "
            f"{_n(_rss(p_mem, 'postgres_backends'))} "
            f"({_n(_anon(p_mem, 'postgres_backends'))})",
            f"Connect JVM {_n(_rss(c_mem, 'connect_jvm'))} "
            f"({_n(_anon(c_mem, 'connect_jvm'))}); walsender + Debezium's backends "
            f"{_n(_rss(c_mem, 'postgres_backends'))} "
            f"({_n(_anon(c_mem, 'postgres_backends'))})",
        ],
        [
            "processes",
            f"{_n(_get(p_mem or {}, 'processes', 'relay_outbox'))} relay_outbox + "
            f"{_n(_get(p_mem or {}, 'processes', 'postgres_backends'))} PostgreSQL "
            "backends (per relay; a standby doubles both)",
            f"{_n(_get(c_mem or {}, 'processes', 'connect_jvm'))} Connect JVM "
            f"({_n((c_mem or {}).get('connect_jvm', {}).get('threads'))} threads) + "
            f"{_n(_get(c_mem or {}, 'processes', 'postgres_backends'))} PostgreSQL "
            "backends (walsender, JDBC) + the connector's registration",
        ],
        ["operational steps", OPERATIONS["polling"], OPERATIONS["cdc"]],
    ]
    return [
        "## Polling relay vs CDC relay (Debezium)",
        "",
        "Both relays on the same machine in the same run (bench/cdc.py, bench/pipeline.py "
        "in cdc mode). Drain: the polling relay's bench/sharded_relay.py protocol (1 "
        "relay, 1 shard); Debezium's connector stopped (KIP-875) while the rows are "
        "committed as cdc-mode `publish` writes them (inserted and deleted in their "
        "transaction), then resumed. Latency: the SQL writer and `run_consumers "
        "--concurrency 2`, PostgreSQL's clock, as the SQL-writer rows above. "
        "Recovery: a writer at about 1,000 events/s, the relay (or a Connect worker of "
        "the step's own) killed with SIGKILL; `events flow again` is the kill → the "
        "first message produced after it, `caught up` the kill → every event committed "
        "before that is on the topic. Memory in the recovery load's steady state; a "
        "backend's VmRSS counts the shared buffers it touched, RssAnon is its own."
        + _rerun_note(results),
        "",
        _table(["", "polling (relay_outbox)", "CDC (Debezium in Kafka Connect)"], rows),
        "",
        *recommendation(results),
    ]


def _rerun_note(results: dict) -> str:
    rerun = results.get("rerun_after_the_run")
    if not rerun:
        return ""
    return (
        f" The steps {', '.join(rerun['steps'])} were run again after the full run, on "
        f"the same machine ({rerun['why']})."
    )


def recommendation(results: dict) -> list[str]:
    """What a team should choose, with this run's figures in the words."""
    g = lambda *p: _get(results, *p)  # noqa: E731
    poll_100 = g("pipeline_e2e_latency_ms", "rate_100", "p50")
    cdc_100 = g("cdc_e2e_latency_ms", "rate_100", "p50")
    saturation = g("pipeline_e2e_latency_ms", "saturation", "achieved_rate")
    return [
        "**Recommendation.** Use the polling relay (the default) unless one of the "
        "reasons below for CDC applies. On this machine it drains "
        f"{_n(g('cdc', 'polling', 'drain', 'events_per_second'))} events/s against "
        f"Debezium's {_n(g('cdc_drain_events_per_s'))}, answers in p50 {_n(poll_100)} "
        f"ms against {_n(cdc_100)} ms at 100 reservations/s, is sending again "
        f"{_n(g('cdc', 'polling', 'recovery_restart', 'resumed_s'))} s after a kill -9 "
        f"(a hot standby: {_n(g('cdc', 'polling', 'recovery_standby', 'resumed_s'))} s) "
        f"against {_n(g('cdc', 'cdc', 'recovery', 'resumed_s'))} s for a restarted "
        "Connect worker, and sends "
        f"{_n(g('cdc', 'polling', 'recovery_restart', 'duplicates'))} duplicates "
        f"after it against {_n(g('cdc', 'cdc', 'recovery', 'duplicates'))} (about "
        "one offset-flush interval of events, which the inbox absorbs). It is one "
        "Python process of about 100 MB to run and watch, where CDC adds a JVM of "
        "250–300 MB, Connect's three topics, a connector's state and a replication "
        "slot that keeps the cluster's WAL while nobody reads it. The 1,000/s row "
        "compares no relays: the writers, a relay, the consumers, PostgreSQL and the "
        "broker share two cores, which reach about "
        f"{_n(saturation)} reservations/s flat out (polling), and the two runs "
        f"achieved {_n(g('pipeline_e2e_latency_ms', 'rate_1000', 'achieved_rate'))} "
        f"and {_n(g('cdc_e2e_latency_ms', 'rate_1000', 'achieved_rate'))}/s of the "
        "1,000/s asked: their latency is the backlog's.",
        "",
        "Choose CDC when the outbox is written by more than this application (other "
        "services or SQL jobs insert rows Debezium sends the same way), when a team "
        "already runs Kafka Connect and Debezium and watches them, or when the relay's "
        "reads and deletes on the primary are unwelcome (CDC reads the WAL; the table "
        "stays empty). For throughput past one relay process, shard the polling relay "
        "(OUTBOX_RELAY_SHARDS) over machines of their own before reaching for CDC: "
        "one relay's own CPU bounds it at about "
        f"{_n(g('sharded_relay', 'relay_bound_events_per_s_per_relay_core'))} events/s "
        "per core, and each relay on its own machine adds about that until PostgreSQL "
        "or the brokers are the limit; on one 2-core machine neither sharding nor CDC "
        "raises the drain.",
        "",
    ]


def _get(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value
