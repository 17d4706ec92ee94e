"""Text from a visitor shown as text: never as a link, an image, HTML or formatting.

Streamlit renders markdown in ``st.markdown``, ``st.caption``, ``st.title``, ``st.error``, image
captions, widget labels and progress texts. A value from an address (``?layer=...``), an upload's
file name, a dataset path or a text box may carry ``[sign in](http://evil)``, ``![x](http://tracker)``
or ``<img src=...>``: interpolated as is, the reader gets a link, or their browser fetches the
address. :func:`plain` makes such a value read literally.

Written by hand: no maintained library escapes for Streamlit's dialect (GitHub markdown with
autolinks, ``:material/...:`` icons, ``:red[...]`` colours, ``$...$`` maths). Two tools suffice.
A backslash escapes the characters that open markup: links and images need ``[``, HTML and
``<url>`` autolinks ``<``, code a backtick, emphasis ``*`` (and ``_`` at a word's edge: inside a
word, as in ``VIZCORE_DATA_ROOTS``, it is plain already), maths ``$``, strikethrough ``~``,
entities ``&``, headings ``#``, quotes and lists a leading ``>``, ``-``, ``+`` or ``1.``; the rest of
the text is left as it is, so messages read (and are searched) unchanged. Escapes cannot stop what
Streamlit finds in the text after parsing (GitHub's bare autolinks ``http://...``, ``www.``,
``a@b.org``; ``:icon:`` short codes), so an invisible WORD JOINER (U+2060, :data:`JOINER`) goes
inside each trigger (``:⁠//``, ``w⁠ww.``, ``@⁠``, ``:⁠name``): it reads the same and links nothing.
"""
from __future__ import annotations

import re

JOINER = "\u2060"
"""WORD JOINER: invisible and zero-width; :func:`plain` puts it inside autolink and icon triggers."""

_SPACE = re.compile(r"\s+")
_TRIGGER = re.compile(r"(?<=:)(?=//|[A-Za-z])|(?<=@)|(?<=w)(?=ww\.)", re.IGNORECASE)
# Always escaped; "_" only where it can open or close emphasis (not between two letters or digits).
_MARKUP = re.compile(r"([\\`*\[\]<>$~&#|])|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_ORDERED = re.compile(r"(\s*\d+)[.)]")
_BULLET = re.compile(r"^(\s*)([-+=])")


def plain(value: object) -> str:
    """``value`` as text for markdown: whitespace runs as one space (no heading, list or paragraph
    can start on a new line), a :data:`JOINER` inside every autolink or icon trigger, and a
    backslash before every character that opens markup (see the module's docstring). Use it for
    any value a visitor controls, alone or in the line that quotes it::

        st.error(plain(f"The address names layer {layer!r}: {e}"))
    """
    text = _SPACE.sub(" ", str(value))
    text = _TRIGGER.sub(JOINER, text)
    text = _MARKUP.sub(lambda m: "\\" + m.group(0), text)
    if m := _ORDERED.match(text):  # "1. x" would start a numbered list
        return f"{m.group(1)}\\{text[m.end(1):]}"
    return _BULLET.sub(r"\1\\\2", text, count=1)  # "- x", "+ x": a bullet list; "=": a heading's rule
