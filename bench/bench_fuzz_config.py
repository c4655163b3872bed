"""Fuzz the config parser with hypothesis-generated workbooks for longer than CI does.

    python bench/bench_fuzz_config.py [--examples N] [--rows N]

Each example is a whole set of config tabs (wrong types, unicode, huge and nested cells,
formulas, error values, broken headers, up to ``--rows`` rows); every one must parse
without an exception, with every error at a real cell and every valid job scheduled.
"""

from __future__ import annotations

import argparse
import time

from _common import figure, quiet
from hypothesis import HealthCheck, given, settings

from sheetops.testing.config_fuzz import as_text, check_parse, config_workbooks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    quiet()
    count = 0

    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(config_workbooks(max_rows=args.rows))
    def fuzz(rows_by_tab) -> None:
        nonlocal count
        check_parse(as_text(rows_by_tab))
        count += 1

    started = time.perf_counter()
    fuzz()
    took = time.perf_counter() - started
    figure("fuzz_examples", count, "examples", f">= {args.examples} without a failure")
    figure("fuzz_rate", count / took, "examples/s")


if __name__ == "__main__":
    main()
