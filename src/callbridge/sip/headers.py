"""An ordered, case-insensitive SIP header collection (RFC 3261 §7.3)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from .grammar import WS, split_quoted

# RFC 3261 §7.3.3 and the IANA registry: compact forms expand to full names.
COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

# Canonical spelling for names whose capitalisation is not plain Title-Case.
_CANONICAL = {
    name.lower(): name
    for name in (
        "Call-ID", "CSeq", "WWW-Authenticate", "RAck", "RSeq", "Min-SE", "MIME-Version",
        "Session-Expires", "Max-Forwards", "Record-Route", "Content-Length", "Content-Type",
        "Proxy-Authenticate", "Proxy-Authorization", "Refer-To", "Referred-By", "Allow-Events",
        "Subscription-State", "User-Agent", "Min-Expires", "Retry-After", "P-Asserted-Identity",
    )
}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1: they may
# be split over several lines or combined on one). Authorization-style headers
# are *not* here: commas inside them separate parameters, not values.
LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Via", "Contact", "Route", "Record-Route", "Allow", "Supported", "Require",
        "Proxy-Require", "Unsupported", "Accept", "Accept-Encoding", "Accept-Language",
        "Content-Encoding", "Allow-Events", "In-Reply-To", "Error-Info", "Alert-Info",
        "Call-Info", "Path", "Service-Route",
    )
)


@lru_cache(maxsize=1024)
def canonical_name(name: str) -> str:
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    if lower in _CANONICAL:
        return _CANONICAL[lower]
    return "-".join(part[:1].upper() + part[1:] for part in lower.split("-"))


# Spelled here because inside the class ``set`` names the Headers.set method.
TokenSet = set[str]


class Headers:
    """Header fields in wire order; names are canonicalised once on insert."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        for name, value in items or ():
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        self._items.insert(0, (canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every instance of ``name`` with one value, keeping the first's position."""
        name = canonical_name(name)
        for index, (existing, _) in enumerate(self._items):
            if existing == name:
                self._items[index] = (name, value)
                self._items[index + 1 :] = [item for item in self._items[index + 1 :] if item[0] != name]
                return
        self._items.append((name, value))

    def remove(self, name: str) -> None:
        name = canonical_name(name)
        self._items = [item for item in self._items if item[0] != name]

    def get(self, name: str, default: str | None = None) -> str | None:
        name = canonical_name(name)
        for existing, value in self._items:
            if existing == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every line's raw value for ``name`` (no comma splitting)."""
        name = canonical_name(name)
        return [value for existing, value in self._items if existing == name]

    def get_list(self, name: str) -> list[str]:
        """Values of a list header, split on commas outside quotes and <>.

        RFC 3261 §7.3.1: ``Via: a, b`` and two ``Via`` lines are equivalent.
        Empty elements (``a,,b``) are skipped, as most stacks do.
        """
        raws = self.get_all(name)
        if canonical_name(name).lower() not in LIST_HEADERS:
            return raws
        values: list[str] = []
        for raw in raws:
            for part in split_quoted(raw, ","):
                part = part.strip(WS)
                if part:
                    values.append(part)
        return values

    def get_tokens(self, name: str) -> TokenSet:
        """Option-tag style headers (Supported, Require, Allow) as a lower-case set."""
        return {value.lower() for value in self.get_list(name)}

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> "Headers":
        clone = Headers()
        clone._items = list(self._items)
        return clone

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"
