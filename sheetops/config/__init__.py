"""The config sheet turned into an immutable snapshot plus Validation problems."""

from sheetops.config.model import AlertSpec, JobSpec, Problem, SheetSettings, Snapshot
from sheetops.config.parse import parse_config
from sheetops.config.schedule import ScheduleError, parse_schedule

__all__ = ["AlertSpec", "JobSpec", "Problem", "ScheduleError", "SheetSettings", "Snapshot",
           "parse_config", "parse_schedule"]
