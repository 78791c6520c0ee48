"""Keep secrets in URLs out of logs, errors and CLI output.

`redact_url` replaces, anywhere in a URL:

* the password of the userinfo (``user:***@``), or the whole userinfo when it has no colon
  (``***@``: some brokers read a lone userinfo as the password);
* the value of every query parameter whose name looks secret (``password``, ``token``,
  ``aws_secret_access_key``, ``api_key``, ...);
* every query value that is itself a URL, or contains ``@``, however often percent-encoded
  (``?store=redis://:secret@host/0``): redacted by the same rules, recursively;
* the fragment, whole (backend URLs have no use for one).

`redact_text` does the same for every URL inside a longer text (an error message).
Passwords must be percent-encoded in URLs (as RFC 3986 and every URL parser require); an
unencoded ``/``, ``?``, ``#`` or ``@`` in a password ends the authority early and is
not recognised.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

MASK = "***"

_SECRET_PARAMS = re.compile(
    r"(secret|passw|pwd|token|signature|credential|auth|session|(^|_)key$|_key_)", re.I
)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_MAX_DEPTH = 8


def redact_url(url: str) -> str:
    """`url` with every password and secret-looking value replaced by ``***`` (see module doc).

    >>> redact_url("celery+redis://:hunter2@localhost:6379/0?aws_secret_access_key=x")
    'celery+redis://:***@localhost:6379/0?aws_secret_access_key=***'
    """
    return _redact_url(url, 0)


def redact_text(text: str) -> str:
    """`text` with every URL in it passed through `redact_url`."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)


def _redact_url(url: str, depth: int) -> str:
    if depth > _MAX_DEPTH:
        return MASK
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    path = _redact_value(parts.path, depth) if "@" in unquote(parts.path) else parts.path
    query = _redact_query(parts.query, depth)
    fragment = MASK if parts.fragment else ""
    if (netloc, path, query, fragment) == (parts.netloc, parts.path, parts.query, parts.fragment):
        return url  # nothing to hide; urlunsplit would also mangle sqlite:////abs/path
    text = f"{parts.scheme}:" if parts.scheme else ""
    if netloc or url[len(text) :].startswith("//"):
        text += f"//{netloc}"  # urlunsplit would drop an empty authority (sqs://?...)
    text += path
    text += f"?{query}" if query else ""
    return text + (f"#{fragment}" if fragment else "")


def _redact_query(query: str, depth: int) -> str:
    """Each ``name=value`` of `query`, worked on as written (not decoded first, which could
    turn an encoded ``?`` or ``#`` inside a nested URL's password into a delimiter)."""
    if not query:
        return query
    pairs = [pair.partition("=") for pair in query.split("&")]
    redacted = [
        (
            _redact_value(name, depth) if "@" in _decoded(name) else name,
            sep,
            MASK if sep and _SECRET_PARAMS.search(_decoded(name)) else _redact_value(value, depth),
        )
        for name, sep, value in pairs
    ]
    if redacted == pairs:
        return query
    return "&".join("".join(pair) for pair in redacted)


def _redact_value(value: str, depth: int) -> str:
    """A value that may be a URL (percent-encoded any number of times) or carry ``...@``.

    Decoded one layer at a time, and parsed at the first layer that reads as a URL, so the
    percent-encoding inside the nested URL (of its password, say) is kept for its parse.
    """
    layer = value
    for _ in range(_MAX_DEPTH):
        if "://" in layer:
            redacted = _redact_url(layer, depth + 1)
            return value if redacted == layer else redacted
        once = unquote(layer)
        if once == layer:
            break
        layer = once
    if "@" in layer:
        return f"{MASK}@{layer.rsplit('@', 1)[1]}"
    return value


def _decoded(value: str) -> str:
    """`value` percent-decoded until it no longer changes (a URL nested twice is encoded twice)."""
    for _ in range(_MAX_DEPTH):
        once = unquote(value)
        if once == value:
            break
        value = once
    return value
