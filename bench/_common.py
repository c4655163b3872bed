"""Shared bits of the benchmarks: the figure line format and quiet logging."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def figure(name: str, value: float, unit: str, goal: str = "-") -> None:
    """Print one figure in the format every benchmark uses."""
    shown = f"{value:.3g}" if isinstance(value, float) else str(value)
    print(f"figure: {name} = {shown} {unit} (goal {goal})", flush=True)


def quiet() -> None:
    logging.basicConfig(level=logging.WARNING)
    for name in ("apscheduler", "sheetops"):
        logging.getLogger(name).setLevel(logging.ERROR)
