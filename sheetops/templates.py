"""Templates from the Templates tab, rendered in Jinja2's sandbox.

The sandbox stops a sheet editor from reaching Python internals
(``{{ ''.__class__.__mro__ }}`` raises ``SecurityError``); undefined variables render
as errors, not as silent blanks, so a typo in a template fails the run visibly.

Every render also has a cost limit, because alert templates render inside the scheduler
process and a job's template inside a worker: a render that runs longer than its time
limit (``RENDER_TIME_LIMIT_S`` unless the caller gives one) or writes more than
``RENDER_OUTPUT_LIMIT`` characters raises ``TemplateLimitError`` instead of stalling the
alert thread or filling the memory.
Loops check the deadline as they iterate, ``*``/``**`` refuse results past the output
limit, and ``namespace()`` refuses to hold a value past it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from sheetops.errors import PermanentError

#: the longest one template render may take (subject and body together)
RENDER_TIME_LIMIT_S = 5.0
#: the most characters one render may produce (and one value it may build)
RENDER_OUTPUT_LIMIT = 1_000_000
#: how many loop iterations pass between two deadline checks
_CHECK_EVERY = 256
_GUARD = "__sheetops_loop_guard"

#: (deadline on the monotonic clock, the limit it came from) of the render under way
_deadline: ContextVar[tuple[float, float]] = ContextVar(
    "sheetops_template_deadline", default=(float("inf"), RENDER_TIME_LIMIT_S))


class TemplateLimitError(PermanentError):
    """A template render went past its time or output-size limit (it would hang or
    exhaust memory); the render is stopped and the run or alert reports this instead."""


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


def _check_deadline() -> None:
    deadline, limit_s = _deadline.get()
    if time.monotonic() > deadline:
        raise TemplateLimitError(f"template render took longer than {limit_s:g} s "
                                 "(a loop too long?); it was stopped")


def _too_big(what: str) -> TemplateLimitError:
    return TemplateLimitError(f"template {what} would be longer than {RENDER_OUTPUT_LIMIT:,} "
                              "characters; it was stopped")


def _loop_guard(iterable: Iterable[Any]) -> Iterator[Any]:
    """Wrap every ``{% for %}`` so that nested loops that print nothing still stop."""
    for count, item in enumerate(iterable):
        if count % _CHECK_EVERY == 0:
            _check_deadline()
        yield item


def _sized(value: Any) -> Any:
    if isinstance(value, (str, bytes, list, tuple)) and len(value) > RENDER_OUTPUT_LIMIT:
        raise _too_big("value")
    return value


def _multiply(left: Any, right: Any) -> Any:
    for seq, times in ((left, right), (right, left)):
        if (isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int)
                and len(seq) * times > RENDER_OUTPUT_LIMIT):
            raise _too_big("value")
    return left * right


def _power(left: Any, right: Any) -> Any:
    if (isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0
            and right * abs(left).bit_length() > RENDER_OUTPUT_LIMIT):
        raise _too_big("number")
    return left**right


class _LimitedNamespace(Namespace):
    """``namespace()`` whose attributes cannot grow past the output limit."""

    def __setitem__(self, name: str, value: Any) -> None:  # type: ignore[override]
        super().__setitem__(name, _sized(value))


class LimitedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox plus cost limits: loops check the render deadline, big ``*`` and
    ``**`` results and oversized ``namespace`` values are refused."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals[_GUARD] = _loop_guard
        self.globals["namespace"] = _LimitedNamespace

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "*":
            return _multiply(left, right)
        if operator_ == "**":
            return _power(left, right)
        return super().call_binop(context, operator_, left, right)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.Name(_GUARD, "load"), [loop.iter], [], None, None,
                                   lineno=loop.lineno)
        return tree


@lru_cache(maxsize=2)
def _environment(html: bool) -> LimitedEnvironment:
    return LimitedEnvironment(undefined=StrictUndefined, autoescape=html,
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


def _limited(source: str, html: bool, variables: dict[str, Any], budget: list[int]) -> str:
    """Stream one template, stopping at the deadline or when ``budget`` runs out."""
    chunks = []
    for chunk in _compile(source, html).generate(variables):
        budget[0] -= len(chunk)
        if budget[0] < 0:
            raise _too_big("output")
        _check_deadline()
        chunks.append(chunk)
    return "".join(chunks)


def render(spec: TemplateSpec, variables: dict[str, Any], *,
           time_limit_s: float = RENDER_TIME_LIMIT_S) -> Rendered:
    """Render subject and body within ``time_limit_s`` and the output limit
    (``TemplateLimitError``)."""
    html = spec.format == "html"
    budget = [RENDER_OUTPUT_LIMIT]
    token = _deadline.set((time.monotonic() + time_limit_s, time_limit_s))
    try:
        subject = _limited(spec.subject, False, variables, budget) if spec.subject else ""
        body = _limited(spec.body, html, variables, budget) if spec.body else ""
    finally:
        _deadline.reset(token)
    return Rendered(subject.strip(), body, spec.format)


# -- plain text from HTML (the text/plain alternative of an HTML mail, Slack text) ------
class _TextExtractor(HTMLParser):
    _BREAKS = {"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in {"script", "style"}:
            self._skip += 1
        elif tag in self._BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"script", "style"} and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """A readable plain-text version of ``html`` for the text/plain alternative."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip() + "\n"
