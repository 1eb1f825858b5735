"""`python -m bench.chaos [--flows N] [--faults N] [--nodes 1|3] [--relay polling|cdc]
[--relays N] [--shards S]`.

Exits 1 when the checker found anything lost, doubled, reordered, stuck, or a dead
letter that was not injected; the figures are in bench/results/chaos.json either way.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from bench.chaos.faults import KINDS
from bench.chaos.run import ChaosConfig, run


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos")
    defaults = ChaosConfig()
    parser.add_argument("--flows", type=int, default=defaults.flows)
    parser.add_argument("--faults", type=int, default=defaults.faults)
    parser.add_argument("--clients", type=int, default=defaults.clients)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--nodes", type=int, choices=(1, 3), default=defaults.nodes)
    parser.add_argument(
        "--relay",
        choices=("polling", "cdc"),
        default=defaults.relay,
        help="OUTBOX_RELAY: relay_outbox processes, or Kafka Connect workers",
    )
    parser.add_argument(
        "--relays",
        type=int,
        default=defaults.relays,
        help="relay_outbox processes, or Connect workers with --relay cdc",
    )
    parser.add_argument(
        "--shards", type=int, default=defaults.shards, help="OUTBOX_RELAY_SHARDS"
    )
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"comma-separated fault kinds (default: all of {', '.join(KINDS)})",
    )
    parser.add_argument("--keep-database", action="store_true")
    args = parser.parse_args(argv)
    if args.relay == "cdc" and args.shards != 1:
        parser.error("--shards is the polling relay's (the CDC connector has one task)")
    unknown = set(args.kinds.split(",")) - set(KINDS)
    if unknown:
        parser.error(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    # A SIGTERM (a timeout's) unwinds like an exception: the run cleans up after itself.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    result = run(
        ChaosConfig(
            flows=args.flows,
            faults=args.faults,
            clients=args.clients,
            seed=args.seed,
            nodes=args.nodes,
            relay=args.relay,
            relays=args.relays,
            shards=args.shards,
            out=args.out,
            keep_database=args.keep_database,
            kinds=tuple(k for k in args.kinds.split(",") if k),
        )
    )
    summary = {k: v for k, v in result.items() if k != "fault_log"}
    print(json.dumps(summary, indent=2, default=str))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
