"""`manage.py run_consumers`: run the handlers' consumers until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.consumer import gc_tuning
from events.consumer.runner import ConsumerRunner
from events.core.conf import pipeline_settings
from events.core.kafka import KafkaException, missing_topics
from events.core.registry import handlers_for
from events.dead_letters.store import DeadLetterStoreRunner

logger = logging.getLogger("events.consumer")


class Command(BaseCommand):
    help = (
        "Consume the event topics and run the registered handlers, with retries and "
        "dead-letter topics. --concurrency N runs N processes in one consumer group."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--topics",
            nargs="+",
            metavar="STREAM",
            help="Streams to consume (default: every stream with a handler), "
            "e.g. seat-reserved payment-complete.",
        )
        parser.add_argument("--group", help="Consumer group (default: settings).")
        parser.add_argument("--concurrency", type=int, default=1)
        parser.add_argument(
            "--threads",
            type=int,
            default=None,
            help="Consumers per process, each in its own thread with its own database "
            "connection (default: CONSUMER_THREADS). While one waits for PostgreSQL, "
            "another decodes: about half of a consumer's time is that wait.",
        )
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument("--metrics-port", type=int, default=None)
        parser.add_argument(
            "--dead-letters",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="Also store the streams' DLQ messages as DeadLetter rows (own "
            "consumer group; a thread here, or one extra process with --concurrency).",
        )
        # The supervisor's extra child: only the dead-letter store.
        parser.add_argument(
            "--dead-letters-only", action="store_true", help=argparse.SUPPRESS
        )

    def handle(self, *args: Any, **options: Any) -> None:
        conf = pipeline_settings()
        if options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1")
        threads = options["threads"]
        if threads is None:
            threads = conf.consumer_threads
        if threads < 1:
            raise CommandError("--threads must be at least 1")
        # Each consumer thread holds a database connection, and so does the store's
        # thread when it runs in this process: the pool must have room for all.
        pool_size = settings.DATABASE_POOL_MAX_SIZE
        in_process_store = options["dead_letters"] and options["concurrency"] == 1
        connections_needed = threads + (1 if in_process_store else 0)
        if pool_size > 0 and connections_needed > pool_size:
            raise CommandError(
                f"{connections_needed} database connections are needed per process "
                f"({threads} consumer thread(s)"
                f"{' and the dead-letter store' if in_process_store else ''}), but "
                f"DATABASE_POOL_MAX_SIZE is {pool_size}: raise it, or run fewer "
                "threads (see the README's connection budget)."
            )
        streams = options["topics"] or [s for s in conf.streams if handlers_for(s)]
        unknown = [s for s in streams if s not in conf.streams]
        if unknown:
            raise CommandError(
                f"unknown streams {', '.join(unknown)}; known: {', '.join(conf.streams)}"
            )
        if not streams:
            raise CommandError("no handler is registered for any stream")
        needed = [t for s in streams for t in [conf.topic(s), *conf.retry_topics(s)]]
        needed += [conf.dlq_topic(s) for s in streams]
        try:
            missing = missing_topics(needed)
        except KafkaException as exc:
            raise CommandError(
                f"cannot reach Kafka at {conf.bootstrap_servers}: {exc}"
            ) from exc
        if missing:
            raise CommandError(
                f"topics missing on {conf.bootstrap_servers}: {', '.join(missing)}. "
                "Run `manage.py create_topics` first."
            )
        if options["dead_letters_only"]:
            self._run_store_only(streams)
            return
        if options["concurrency"] > 1:
            self._supervise(
                options["concurrency"], options["metrics_port"], options["dead_letters"]
            )
            return
        if options["metrics_port"]:
            from prometheus_client import start_http_server

            start_http_server(options["metrics_port"])
        runners = [
            ConsumerRunner(
                streams=streams,
                group_id=options["group"],
                batch_size=options["batch_size"],
            )
            for _ in range(threads)
        ]
        store = (
            DeadLetterStoreRunner(streams=streams) if options["dead_letters"] else None
        )
        gc_tuning.tune_for_batches()

        def stop_all() -> None:
            for runner in runners:
                runner.stop()
            if store is not None:
                store.stop()

        def shutdown(signum: int, _frame: object) -> None:
            logger.info(
                "signal %d: finishing the message in flight, then stopping", signum
            )
            stop_all()

        signal.signal(signal.SIGTERM, shutdown)
        signal.signal(signal.SIGINT, shutdown)
        store_thread = None
        if store is not None:
            # Light work (one insert per DLQ batch), so a thread beside the runners.
            store_thread = threading.Thread(
                target=_run_closing_connection,
                args=(store,),
                name="dead-letter-store",
                daemon=True,
            )
            store_thread.start()
        try:
            if threads == 1:
                runners[0].run()
            else:
                _run_threads(runners, stop_all)
        finally:
            if store is not None and store_thread is not None:
                store.stop()
                store_thread.join(timeout=30)

    def _run_store_only(self, streams: list[str]) -> None:
        store = DeadLetterStoreRunner(streams=streams)

        def shutdown(signum: int, _frame: object) -> None:
            logger.info("signal %d: stopping the dead-letter store", signum)
            store.stop()

        signal.signal(signal.SIGTERM, shutdown)
        signal.signal(signal.SIGINT, shutdown)
        store.run()

    def _supervise(
        self, count: int, metrics_port: int | None, dead_letters: bool
    ) -> None:
        """Run `count` single consumers as child processes; restart any that dies.

        Processes, not threads: handler work is Python, and the GIL would make
        threads share one core.
        """
        base_argv = [
            sys.executable,
            *_child_args(sys.argv),
            "--concurrency",
            "1",
            "--no-dead-letters",
        ]
        stopping = False

        def spawn(number: int) -> subprocess.Popen[bytes]:
            if number == count:
                # The extra child: the dead-letter store, in its own group.
                return subprocess.Popen([*base_argv, "--dead-letters-only"])
            # Child n serves its metrics on metrics_port + n.
            port = (
                ["--metrics-port", str(metrics_port + number)] if metrics_port else []
            )
            return subprocess.Popen([*base_argv, *port])

        children = [spawn(n) for n in range(count + (1 if dead_letters else 0))]

        def shutdown(signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, shutdown)
        signal.signal(signal.SIGINT, shutdown)
        logger.info("supervising %d consumer processes", count)
        while True:
            if stopping:
                for child in children:
                    child.wait()
                return
            for i, child in enumerate(children):
                code = child.poll()
                if code is not None and not stopping:
                    logger.error(
                        "consumer process %d exited with %s; restarting",
                        child.pid,
                        code,
                    )
                    time.sleep(1)
                    children[i] = spawn(i)
            time.sleep(0.5)


def _child_args(argv: list[str]) -> list[str]:
    """The supervisor's own arguments minus the ones it sets per child."""
    per_child = ("--concurrency", "--metrics-port")
    flags = ("--dead-letters", "--no-dead-letters", "--dead-letters-only")
    out: list[str] = []
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg in flags:
            continue
        elif arg in per_child:
            skip_next = True
        elif not arg.startswith(tuple(f"{name}=" for name in per_child)):
            out.append(arg)
    return out


def _run_threads(runners: list[ConsumerRunner], stop_all: Callable[[], None]) -> None:
    """Run each runner in its own thread until all have returned.

    If one fails, all stop and the command fails, so the supervisor (or the
    container runtime) restarts a whole, healthy process.
    """
    from django.db import connection

    failures: list[BaseException] = []

    def run(runner: ConsumerRunner) -> None:
        try:
            runner.run()
        except BaseException as exc:
            logger.exception("a consumer thread stopped on an error; stopping all")
            failures.append(exc)
            stop_all()
        finally:
            connection.close()

    workers = [
        threading.Thread(target=run, args=(r,), name=f"consumer-{n}")
        for n, r in enumerate(runners)
    ]
    for worker in workers:
        worker.start()
    # Joining in slices keeps the main thread free to run the signal handlers.
    while any(worker.is_alive() for worker in workers):
        for worker in workers:
            worker.join(timeout=0.5)
    if failures:
        raise CommandError(f"a consumer thread failed: {failures[0]!r}")


def _run_closing_connection(store: DeadLetterStoreRunner) -> None:
    from django.db import connection

    try:
        store.run()
    except Exception:
        logger.exception("the dead-letter store stopped on an error")
    finally:
        connection.close()
