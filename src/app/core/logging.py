"""Structured logging: one JSON object per line (a readable console in development).

structlog renders our own events and, through `ProcessorFormatter`, the records of the standard
library loggers too (uvicorn, SQLAlchemy, ARQ), so every line has the same shape. The request id
is bound in a context variable by the request middleware and appears in every line of a request.
"""

from __future__ import annotations

import functools
import logging
import logging.config
import re
from typing import Any

import structlog
import structlog.tracebacks
from structlog.types import EventDict, Processor

_SECRET_KEY = re.compile(r"pass(word)?|secret|token|authorization|cookie|hash", re.IGNORECASE)
_REDACTED = "[REDACTED]"


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    # Field names come from code, so there are few of them: the regex runs once per name.
    return key != "event" and _SECRET_KEY.search(key) is not None


def redact_secrets(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """A safety net: a field whose name looks secret never reaches the output."""
    for key in event_dict:
        if _is_secret_key(key):
            event_dict[key] = _REDACTED
    return event_dict


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """structlog's formatter, without its per-record copy for our own events.

    `ProcessorFormatter.format` copies every record and runs it through `logging.Formatter`;
    for an event that structlog already processed (exceptions included, by `ExceptionRenderer`)
    only the renderer is left to run, so it is run directly. Records of other libraries take
    the full path.
    """

    def __init__(self, *, renderer: Processor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._renderer = renderer

    def format(self, record: logging.LogRecord) -> str:
        name = getattr(record, "_name", None)
        if name is None or record.exc_info or record.stack_info:
            return super().format(record)
        event: EventDict = dict(record.msg)  # type: ignore[arg-type]
        return str(self._renderer(getattr(record, "_logger", None), name, event))


class _WithTraceIds:
    """A renderer that first adds the current span's `trace_id` and `span_id` (tracing on)."""

    def __init__(self, renderer: Processor) -> None:
        from app.core.tracing import add_trace_ids

        self._add = add_trace_ids
        self._renderer = renderer

    def __call__(self, logger: Any, name: str, event_dict: EventDict) -> Any:
        return self._renderer(logger, name, self._add(logger, name, event_dict))


def drop_color_message(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """uvicorn adds an ANSI-coloured copy of its message as `color_message`; it is noise."""
    event_dict.pop("color_message", None)
    return event_dict


def _console_tracebacks() -> structlog.typing.ExceptionRenderer:
    """Readable tracebacks for the console, without local variables (they may hold secrets)."""
    try:
        return structlog.dev.RichTracebackFormatter(show_locals=False)
    except ImportError:  # pragma: no cover - rich is not installed
        return structlog.dev.plain_traceback


def configure_logging(level: str = "INFO", *, json: bool = True, trace_ids: bool = False) -> None:
    """Configure structlog and the standard library logging; safe to call more than once.

    `trace_ids` (tracing on): every line written inside a span gets its `trace_id` and
    `span_id`; off, the processor is not even in the chain.
    """
    # What the records would carry that no line prints (see the logging HOWTO, "Optimization"):
    # the caller's frame, the thread, the process. Each costs a lookup or a system call per line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
        drop_color_message,
    ]
    renderer: Processor
    if json:
        renderer = structlog.processors.JSONRenderer()
        # Tracebacks as data, without local variables: locals can hold passwords and tokens.
        shared.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
    else:
        # structlog's default console formatter is rich's, with `show_locals=True`: a traceback
        # would print the frames' local variables, a login's password among them. Never.
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=_console_tracebacks())
    if trace_ids:
        # At the renderer, which every line passes when it is written: loggers that structlog
        # cached before this call (their processor chain is fixed) get the ids too.
        renderer = _WithTraceIds(renderer)

    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "structlog": {
                    "()": _Formatter,
                    "renderer": renderer,
                    "foreign_pre_chain": [structlog.stdlib.ExtraAdder(), *shared],
                    "processors": [
                        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        renderer,
                    ],
                }
            },
            "handlers": {
                "default": {"class": "logging.StreamHandler", "formatter": "structlog"},
            },
            "root": {"handlers": ["default"], "level": level},
            "loggers": {
                # Our access line replaces uvicorn's; its error logger keeps startup messages.
                "uvicorn": {"handlers": [], "propagate": True},
                "uvicorn.error": {"handlers": [], "propagate": True},
                "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
                "sqlalchemy.engine": {"level": "WARNING"},
                "arq": {"handlers": [], "propagate": True},
            },
        }
    )


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
