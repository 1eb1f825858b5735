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
from events.consumer.loop import ConsumerLoop
from events.consumer.runner import ConsumerRunner
from events.core.conf import PipelineSettings, pipeline_settings
from events.core.registry import handlers_for
from events.dead_letters.store import DeadLetterStoreRunner
from events.management.process import require_topics, serve_metrics, stop_on_signals

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
        in_process_store = options["dead_letters"] and options["concurrency"] == 1
        _check_pool(threads, in_process_store)
        streams = _streams(conf, options["topics"])
        needed = [t for s in streams for t in [conf.topic(s), *conf.retry_topics(s)]]
        require_topics(conf, needed + [conf.dlq_topic(s) for s in streams])
        if options["dead_letters_only"]:
            self._run_loops(
                [DeadLetterStoreRunner(streams=streams)],
                doing="stopping the dead-letter store",
            )
            return
        if options["concurrency"] > 1:
            self._supervise(
                options["concurrency"], options["metrics_port"], options["dead_letters"]
            )
            return
        serve_metrics(options["metrics_port"])
        loops: list[ConsumerLoop] = [
            ConsumerRunner(
                streams=streams,
                group_id=options["group"],
                batch_size=options["batch_size"],
            )
            for _ in range(threads)
        ]
        if in_process_store:
            # Light work (one insert per DLQ batch), so a thread beside the runners.
            loops.append(DeadLetterStoreRunner(streams=streams))
        gc_tuning.tune_for_batches()
        self._run_loops(loops)

    def _run_loops(
        self,
        loops: list[ConsumerLoop],
        *,
        doing: str = "finishing the message in flight, then stopping",
    ) -> None:
        def stop_all() -> None:
            for loop in loops:
                loop.stop()

        stop_on_signals(stop_all, log=logger, doing=doing)
        if len(loops) == 1:
            loops[0].run()
        else:
            _run_threads(loops, stop_all)

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

        def stop_children() -> None:
            nonlocal stopping
            stopping = True
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

        stop_on_signals(stop_children, log=logger, doing="stopping every child")
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


def _run_threads(loops: list[ConsumerLoop], stop_all: Callable[[], None]) -> None:
    """Run each loop (consumers, the dead-letter store) in its own thread until all
    have returned.

    If one fails, all stop and the command fails, so the supervisor (or the
    container runtime) restarts a whole, healthy process: a store that died quietly
    beside running consumers would leave dead letters unstored until a restart.
    """
    from django.db import connection

    failures: list[BaseException] = []

    def run(loop: ConsumerLoop) -> None:
        try:
            loop.run()
        except BaseException as exc:
            logger.exception("a consumer thread stopped on an error; stopping all")
            failures.append(exc)
            stop_all()
        finally:
            connection.close()

    workers = [
        threading.Thread(target=run, args=(loop,), name=f"consumer-{n}")
        for n, loop in enumerate(loops)
    ]
    for worker in workers:
        worker.start()
    # Joining in slices keeps the main thread free to run the signal handlers.
    while any(worker.is_alive() for worker in workers):
        for worker in workers:
            worker.join(timeout=0.5)
    if failures:
        raise CommandError(f"a consumer thread failed: {failures[0]!r}")


def _check_pool(threads: int, in_process_store: bool) -> None:
    """Each consumer thread holds a database connection, and so does the store's
    thread when it runs in this process: the pool must have room for all."""
    pool_size = settings.DATABASE_POOL_MAX_SIZE
    needed = threads + (1 if in_process_store else 0)
    if pool_size > 0 and needed > pool_size:
        raise CommandError(
            f"{needed} database connections are needed per process "
            f"({threads} consumer thread(s)"
            f"{' and the dead-letter store' if in_process_store else ''}), but "
            f"DATABASE_POOL_MAX_SIZE is {pool_size}: raise it, or run fewer "
            "threads (see the README's connection budget)."
        )


def _streams(conf: PipelineSettings, asked: list[str] | None) -> list[str]:
    """The streams to consume: those asked for, else every stream with a handler."""
    streams = asked or [s for s in conf.streams if handlers_for(s)]
    unknown = [s for s in streams if s not in conf.streams]
    if unknown:
        raise CommandError(
            f"unknown streams {', '.join(unknown)}; known: {', '.join(conf.streams)}"
        )
    if not streams:
        raise CommandError("no handler is registered for any stream")
    return streams
