"""Errors on the page: one line with ``st.error``, the traceback only with ``VIZCORE_DEBUG=1``.

The line is shown as plain text (:func:`dashboard.widgets.text.plain`): messages quote model names,
layers, file names and paths that a visitor chose, and markdown in them must not become a link.

``dashboard/app.py`` runs every page inside :func:`errors_shown`, so whatever the
engine raises ends as one line instead of a traceback. A page that must go on after
an error (one model of several fails) wraps just that part in ``with errors_shown(...)``.

Streamlit's control flow (``st.stop``, ``st.rerun``, ``st.switch_page``) raises
``ScriptControlException``, a ``BaseException``: catching ``Exception`` lets it pass.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import streamlit as st

from dashboard.widgets.text import plain

# Errors that mean a bug rather than a bad input: their bare message ('stem' for a KeyError)
# says nothing to a user, so the type is named and the debug switch pointed at.
_INTERNAL = (KeyError, IndexError, AttributeError, TypeError, NameError, AssertionError, ZeroDivisionError,
             UnboundLocalError, NotImplementedError, RecursionError)
MAX_CHARS = 400


def debug() -> bool:
    """``VIZCORE_DEBUG=1``: show tracebacks in the browser too."""
    return os.environ.get("VIZCORE_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def one_line(e: BaseException) -> str:
    """The first line of an exception's message, shortened; never a traceback."""
    text = str(e).strip()
    first = text.splitlines()[0].strip() if text else ""
    if len(first) > MAX_CHARS:
        first = first[: MAX_CHARS - 1] + "…"
    # An input error may also be a KeyError (UnknownModelError, UnknownLayerError: ValueError too).
    if (isinstance(e, _INTERNAL) and not isinstance(e, ValueError)) or not first:
        return (f"internal error ({type(e).__name__}{': ' + first if first else ''}); "
                "set VIZCORE_DEBUG=1 for the details")
    return first


def show_error(e: BaseException, context: str = "") -> None:
    """One ``st.error`` line (``context: message``); with ``VIZCORE_DEBUG=1`` also the traceback."""
    # As text: the message and context often quote what a visitor typed or an address carried.
    st.error(plain(f"{context}: {one_line(e)}" if context else one_line(e)), icon=":material/error:")
    if debug():
        st.exception(e)


@contextmanager
def errors_shown(context: str = "") -> Iterator[None]:
    """Run a block; an exception it raises is shown as one line and execution goes on after it.

    Example::

        with errors_shown(f"Grad-CAM of {name}"):
            draw_gradcam(...)
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 - the point: show, never raise; control flow is BaseException
        show_error(e, context)
