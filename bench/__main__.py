"""Run the benchmarks: `python -m bench [relay_drain] [relay_latency] [consumer]`."""

from __future__ import annotations

import json
import sys

from bench.setup import delete_topics, machine, setup


def main(names: list[str]) -> None:
    prefix = setup()
    from bench import relay

    suites = {
        "relay_drain": relay.drain,
        "relay_latency": relay.latency,
        "relay_latency_200": lambda: relay.latency(rate=200),
    }
    try:
        from bench import consumer

        suites["consumer"] = consumer.throughput
        suites["consumer_join"] = consumer.join
        suites["consumer_failover"] = consumer.failover
    except ImportError:
        pass
    print(f"machine: {machine()}")
    try:
        for name in names or [
            "relay_drain",
            "relay_latency",
            "consumer",
            "consumer_join",
        ]:
            if name not in suites:
                continue
            result = suites[name]()
            print(json.dumps({"bench": name, **result}))
    finally:
        delete_topics(prefix)


if __name__ == "__main__":
    main(sys.argv[1:])
