"""sheetops: spreadsheet-driven automation.

Engineers register automations by name; ops staff schedule them from a sheet::

    from sheetops import automation

    @automation("hello")
    def hello(ctx):
        ctx.log.info("hello %s", ctx.params.get("name", "world"))
        return {"records_out": 1}
"""

from sheetops.context import RunContext
from sheetops.errors import ConfigError, PermanentError, RetryableError, SheetopsError
from sheetops.registry import automation, registry

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "PermanentError",
    "RetryableError",
    "RunContext",
    "SheetopsError",
    "automation",
    "registry",
]
