"""Keep secrets in URLs out of logs and CLI output."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_PARAMS = re.compile(r"(secret|password|passwd|token|key|signature|credential)", re.I)


def redact_url(url: str) -> str:
    """`url` with any password and secret-looking query values replaced by ``***``.

    >>> redact_url("celery+redis://:hunter2@localhost:6379/0?aws_secret_access_key=x")
    'celery+redis://:***@localhost:6379/0?aws_secret_access_key=%2A%2A%2A'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            userinfo = f"{user}:***"
        netloc = f"{userinfo}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAMS.search(k) for k, _ in pairs):
            query = urlencode([(k, "***" if _SECRET_PARAMS.search(k) else v) for k, v in pairs])
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing to hide; urlunsplit would also mangle sqlite:////abs/path
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
