"""Which folders a served dashboard may read: the ``VIZCORE_DATA_ROOTS`` policy.

The dashboard can be reached by people who are not the machine's user, so every
path typed into it must lie under an allowed root. The roots come from
``$VIZCORE_DATA_ROOTS`` (an ``os.pathsep``-separated list, ``:`` on Linux and
macOS); without it they are the user's home, the working directory and the
vizcore cache (:func:`vizcore.cache.cache_root`). Paths are compared after
resolving symbolic links and ``..``, so neither can lead out of a root.

The command line does not apply this policy: it runs as the machine's own user
and may read whatever that user can.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

ENV = "VIZCORE_DATA_ROOTS"


class PathNotAllowedError(PermissionError):
    """A path outside the allowed roots; the message is one line meant for users."""

    def __str__(self) -> str:  # PermissionError's default adds errno noise
        return str(self.args[0]) if self.args else "path not allowed"


def _resolve(p: str | os.PathLike) -> Path:
    # strict=False: a path that does not exist yet (a download target) resolves as far as it can,
    # and its existing part is resolved through every symlink.
    return Path(p).expanduser().resolve(strict=False)


def allowed_roots(default_extra: Iterable[str | os.PathLike] = ()) -> tuple[Path, ...]:
    """The resolved folders dashboard inputs may read under, in order, without duplicates.

    ``$VIZCORE_DATA_ROOTS``, when set, is the whole list; otherwise the home folder, the
    working directory, the cache and ``default_extra``.

    Args:
        default_extra: folders the caller itself offers by default (the reference data a
            checkout ships beside it, say); never folders a visitor typed.
    """
    env = os.environ.get(ENV)
    if env is not None and env.strip():
        roots: list[str | os.PathLike] = [p.strip() for p in env.split(os.pathsep) if p.strip()]
    else:
        from vizcore.cache import cache_root

        roots = [Path.home(), Path.cwd(), cache_root(), *default_extra]
    out: dict[Path, None] = {}
    for p in roots:
        out.setdefault(_resolve(p), None)
    return tuple(out)


def is_allowed(path: str | os.PathLike, roots: Sequence[Path] | None = None) -> bool:
    """Whether ``path`` (resolved) lies under one of ``roots`` (default :func:`allowed_roots`)."""
    real = _resolve(path)
    return any(real == r or real.is_relative_to(r) for r in (allowed_roots() if roots is None else roots))


def check_allowed(path: str | os.PathLike, roots: Sequence[Path] | None = None) -> Path:
    """``path`` with ``~`` expanded, or :class:`PathNotAllowedError` when it lies outside ``roots``.

    The check uses the fully resolved path, so ``..`` and symbolic links cannot escape a
    root; the path returned is the one given (expanded), so messages and labels show what
    the user typed. The error names the path as typed and the setting, nothing more.

    Args:
        path: a file or folder; it need not exist.
        roots: resolved allowed folders; default :func:`allowed_roots`.
    """
    text = str(path).strip()
    if not text:
        raise ValueError("no path given")
    if "\0" in text:
        raise ValueError("a path cannot contain a NUL character")
    if not is_allowed(text, roots):
        raise PathNotAllowedError(
            f"{text} is outside the folders this dashboard may read; its operator can allow more "
            f"with {ENV}")
    return Path(text).expanduser()
