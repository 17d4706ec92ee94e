"""Channel lists as people type them: ``"0-15"``, ``"3,7,12"``, ``"0-3,8"``.

One parser for the CLI (``--channels``) and the dashboard's range box, so both
accept and refuse the same text.
"""
from __future__ import annotations


class ChannelSpecError(ValueError):
    """Text that is not a channel list; the message says what was expected."""


def parse_channels(text: str) -> list[int]:
    """``"0-15"``, ``"3,7,12"`` or ``"0-3,8"`` to a list of channel indices (order kept, no repeats).

    Raises:
        ChannelSpecError: for an empty list, a reversed range (``"4-2"``), a negative
            index or anything that is not a number.
    """
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:  # a range; a leading "-" alone is a (refused) negative number
                lo, hi = part.split("-", 1)
                a, b = int(lo), int(hi)
                if b < a:
                    raise ChannelSpecError(f"empty channel range {part!r}")
                out += range(a, b + 1)
            else:
                out.append(int(part))
        except ChannelSpecError:
            raise
        except ValueError:
            raise ChannelSpecError(f"bad channel list {text!r}; use e.g. 0-15 or 3,7,12") from None
    if not out or any(c < 0 for c in out):
        raise ChannelSpecError(f"bad channel list {text!r}; use e.g. 0-15 or 3,7,12")
    return list(dict.fromkeys(out))
