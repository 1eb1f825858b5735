"""Run one benchmark step: `python -m bench.step module:function --database fresh|aged|dev`.

The database is chosen before Django starts (bench.databases); the function's dict is
printed after bench.harness.RESULT_MARK for the orchestrator.
"""

from __future__ import annotations

import argparse
import importlib


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "target", help="module:function inside bench/, e.g. relay:drain"
    )
    parser.add_argument("--database", default="fresh", choices=["fresh", "aged", "dev"])
    args = parser.parse_args()
    from bench.databases import use
    from bench.harness import emit
    from bench.setup import delete_topics, setup

    use(args.database)
    prefix = setup()
    module_name, function_name = args.target.split(":")
    function = getattr(importlib.import_module(f"bench.{module_name}"), function_name)
    try:
        emit(function())
    finally:
        # The step's topics (bench-<id>-…): a full run would otherwise leave gigabytes.
        delete_topics(prefix)


if __name__ == "__main__":
    main()
