"""Keep passwords out of everything the pool shows: logs, reprs, stats, exceptions."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"

# postgresql://user:password@host  (the userinfo part of a URI)
_URI_PW = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?=@)")
# password=secret or password='sec ret' in a key/value conninfo or a URI query
_KV_PW = re.compile(r"(?P<pre>\bpassword\s*=\s*)(?P<pw>'(?:\\.|[^'])*'|[^\s&]*)", re.IGNORECASE)


def redact_conninfo(conninfo: str) -> str:
    """Return ``conninfo`` with any password replaced by ``***``."""
    s = _URI_PW.sub(lambda m: m.group("pre") + MASK, conninfo)
    return _KV_PW.sub(lambda m: m.group("pre") + MASK, s)


def find_secrets(conninfo: str | None, kwargs: dict[str, Any] | None) -> set[str]:
    """The literal passwords hidden in a conninfo string and connect kwargs."""
    found: set[str] = set()
    if kwargs and kwargs.get("password"):
        found.add(str(kwargs["password"]))
    if conninfo:
        for rx in (_URI_PW, _KV_PW):
            for m in rx.finditer(conninfo):
                pw = m.group("pw").strip("'")
                if pw:
                    found.add(pw)
                    try:  # the URI form may be percent-encoded
                        from urllib.parse import unquote

                        found.add(unquote(pw))
                    except Exception:  # pragma: no cover - unquote does not raise on str
                        pass
    return {s for s in found if len(s) >= 2}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace each secret in ``text`` by ``***``, and redact anything that looks like a DSN."""
    for s in secrets:
        if s:
            text = text.replace(s, MASK)
    return redact_conninfo(text)
