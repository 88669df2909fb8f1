"""Secrets kept out of everything facelab records or prints: a password in a URL
(``postgresql://ann:secret@db/sweeps``), a password-like parameter (``?password=secret``, ``password=secret``,
``PGPASSWORD=secret``) and the value after a password-like option (``--password secret``).

:func:`mask_secrets` is the one masking function: every writer of a command line, URL, message, note or log line
that can hold one passes it through here. It errs towards hiding: text that merely looks like a secret is masked.

    >>> mask_secrets("cannot reach postgresql+psycopg://ann:s3cret@db:5432/sweeps")
    'cannot reach postgresql+psycopg://ann:***@db:5432/sweeps'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MASK = "***"

# scheme://user:PASSWORD@host: the password runs to the last '@' of the word (a raw '@' in it is still hidden)
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<secret>\S*)(?=@)")
_KEYWORDS = r"[A-Za-z_\-]*(?:password|passwd|pwd|secret|token)"
# password=VALUE in a query string, a libpq conninfo, an environment assignment or an option (--password=x)
_ASSIGNED = re.compile(rf"(?P<head>\b{_KEYWORDS}\s*=\s*)(?P<secret>'[^']*'|\"[^\"]*\"|[^\s&;#'\"]+)", re.IGNORECASE)
# an option whose value follows as the next argument: --password secret
_OPTION = re.compile(rf"^--?{_KEYWORDS}$", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """``text`` with every password it holds replaced by ``***``: in URLs, ``password=...`` parameters and
    assignments. Text without one comes back unchanged."""
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    return _ASSIGNED.sub(lambda m: m["head"] + MASK, text)


def mask_argv(argv: Sequence[str]) -> list[str]:
    """A command line as it may be recorded: each argument masked, and the argument after a password-like option
    (``--password VALUE``) replaced whole."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(MASK if i > 0 and _OPTION.match(argv[i - 1]) else mask_secrets(arg))
    return out


def has_secret(text: str) -> bool:
    """Whether :func:`mask_secrets` would hide anything in ``text``."""
    return mask_secrets(text) != text
