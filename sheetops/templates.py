"""Templates from the Templates tab, rendered in Jinja2's sandbox.

The sandbox stops a sheet editor from reaching Python internals
(``{{ ''.__class__.__mro__ }}`` raises ``SecurityError``); undefined variables render
as errors, not as silent blanks, so a typo in a template fails the run visibly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment


@dataclass(frozen=True)
class TemplateSpec:
    name: str
    subject: str
    body: str
    format: str = "text"


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str
    format: str

    @property
    def is_html(self) -> bool:
        return self.format == "html"


@lru_cache(maxsize=2)
def _environment(html: bool) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=html,
                                         keep_trailing_newline=True)


@lru_cache(maxsize=512)
def _compile(source: str, html: bool):
    return _environment(html).from_string(source)


def syntax_problem(source: str) -> str | None:
    """A one-line description of a template syntax error, or ``None`` when it parses."""
    try:
        _environment(False).parse(source)
    except TemplateSyntaxError as exc:
        return f"template syntax error on line {exc.lineno}: {exc.message}"
    return None


def render(spec: TemplateSpec, variables: dict[str, Any]) -> Rendered:
    html = spec.format == "html"
    subject = _compile(spec.subject, False).render(variables) if spec.subject else ""
    body = _compile(spec.body, html).render(variables) if spec.body else ""
    return Rendered(subject.strip(), body, spec.format)
