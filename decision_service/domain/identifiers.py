"""The ONE canonical form of every identifier, used online (request validation) and by every
block-list writer (features/redis_store.add_to_block_list, used by operators, the demo and
tests): a value is compared, counted, stored and logged only in the form these functions return.

Rules (each raises IdentifierError with a human-readable problem; the caller names the field):
  text ids    (user, item, request, context keys/values, outcome item ids): NFC, surrounding
              whitespace stripped, case kept (ids are opaque; ``U1`` and ``u1`` are two users),
              at most ``max_length`` characters, no character of Unicode category Cc (control),
              Cf (format: zero-width, bidi overrides, BOM), Cs (surrogates), Co (private use),
              Zl / Zp (line / paragraph separators), no other default-ignorable (invisible)
              code point (variation selectors, Hangul fillers, tags, CGJ) and no space but
              U+0020 (no-break, ideographic, ... spaces).
  party ids   (fraud: transaction, user, merchant, device, payment instrument): the text rules,
              then ASCII letters, digits and ``. _ : -``; case kept.
  IP address  ``ipaddress``: IPv4-mapped (``::ffff:a.b.c.d``) and deprecated IPv4-compatible
              (``::a.b.c.d``) IPv6 become the IPv4 address; IPv6 in compressed lower-case form;
              zone ids (``fe80::1%eth0``) are rejected (a zone is local to the sender's host).
  country     ISO 3166-1 alpha-2 (the ``iso3166`` package's list, which includes the
              user-assigned ``XK`` that payment networks use for Kosovo), upper-case only;
              ``ZZ`` and other unassigned codes are rejected.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

from iso3166 import countries_by_alpha2

FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
"""Unicode categories no identifier may contain: control, format (invisible / bidi), surrogate,
private use, line and paragraph separators."""

# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt) that are not
# already category Cf: variation selectors, the combining grapheme joiner, Hangul fillers,
# tags: they render as nothing, so two ids that look alike would be two keys.
_DEFAULT_IGNORABLE: tuple[tuple[int, int], ...] = (
    (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x2060, 0x206F),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0xE0000, 0xE0FFF),
)

ISO_3166_ALPHA2: frozenset[str] = frozenset(countries_by_alpha2)
MAX_IP_LENGTH = 45  # the longest IPv6 text form (with an embedded IPv4 address)

_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PARTY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]*")
_CATEGORY_NAMES = {
    "Cc": "control",
    "Cf": "invisible or bidirectional-format",
    "Cs": "surrogate",
    "Co": "private-use",
    "Zl": "line-separator",
    "Zp": "paragraph-separator",
}


class IdentifierError(ValueError):
    """The value cannot be an identifier; the message says why (without the field name)."""


def canonical_text(value: str, max_length: int, required: bool = False) -> str:
    """The canonical form of a free-form identifier (see the module docstring).

    On failure: IdentifierError (empty when required, too long, forbidden character).
    """
    if len(value) > max_length * 4:  # cheap early bound before normalising a huge value
        raise IdentifierError(f"longer than {max_length} characters ({len(value)})")
    if value.isascii():
        if _ASCII_CONTROL.search(value):
            raise IdentifierError("must not contain control characters")
        out = value.strip()
    else:
        for ch in value:
            cat = unicodedata.category(ch)
            if cat in FORBIDDEN_CATEGORIES:
                raise IdentifierError(
                    f"must not contain {_CATEGORY_NAMES[cat]} characters (U+{ord(ch):04X})"
                )
            code = ord(ch)
            if cat == "Zs" and ch != " ":
                raise IdentifierError(f"must not contain spaces other than U+0020 (U+{code:04X})")
            if code >= 0x034F and any(lo <= code <= hi for lo, hi in _DEFAULT_IGNORABLE):
                raise IdentifierError(f"must not contain invisible characters (U+{code:04X})")
        out = unicodedata.normalize("NFC", value).strip()
    if required and not out:
        raise IdentifierError("must not be empty")
    if len(out) > max_length:
        raise IdentifierError(f"longer than {max_length} characters ({len(out)})")
    return out


def canonical_ip(value: str) -> str:
    """The canonical text of an IP address (see the module docstring); "" stays "".

    On failure: IdentifierError (not an address, zone id, too long).
    """
    if len(value) > MAX_IP_LENGTH + 16:
        raise IdentifierError(f"longer than {MAX_IP_LENGTH} characters ({len(value)}): not an IP address")
    if _ASCII_CONTROL.search(value):
        raise IdentifierError("must not contain control characters")
    value = value.strip()
    if not value:
        return ""
    if len(value) > MAX_IP_LENGTH:
        raise IdentifierError(f"longer than {MAX_IP_LENGTH} characters ({len(value)}): not an IP address")
    if "%" in value:
        raise IdentifierError("IPv6 zone ids (%...) are not accepted: send the address alone")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise IdentifierError(f"not an IPv4 or IPv6 address: {ascii(value)}") from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        packed = address.packed
        if packed[:12] == bytes(12) and int.from_bytes(packed[12:], "big") > 1:  # ::a.b.c.d, not :: or ::1
            return str(ipaddress.IPv4Address(packed[12:]))
    return str(address)


def canonical_country(value: str) -> str:
    """An assigned ISO 3166-1 alpha-2 code, accepted only in its one spelling (upper-case, no
    blanks: ``de`` and ``DE\\n`` are rejected, not guessed). On failure: IdentifierError."""
    if value not in ISO_3166_ALPHA2:
        shown = value if len(value) <= 16 else value[:16] + "..."
        raise IdentifierError(f"not an assigned ISO 3166-1 alpha-2 country code (e.g. 'DE'): {ascii(shown)}")
    return value


def canonical_party_id(value: str, max_length: int, required: bool = False) -> str:
    """A payment party's id (transaction, user, merchant, device, instrument): the text rules,
    then ASCII letters, digits and ``. _ : -`` only, starting with a letter or digit; case kept.

    On failure: IdentifierError.
    """
    out = canonical_text(value, max_length, required)
    if out and not _PARTY_ID.fullmatch(out):
        raise IdentifierError(
            "may contain only letters, digits and . _ : - (and not start with one of . _ : -)"
        )
    return out


def canonical_block_value(kind: str, value: str, max_length: int = 256) -> str:
    """The form a block list stores for ``kind`` (device / ip / instrument): exactly what the
    online check compares against, because request validation calls the same functions.

    On failure: IdentifierError.
    """
    if kind == "ip":
        out = canonical_ip(value)
        if not out:
            raise IdentifierError("must not be empty")
        return out
    return canonical_party_id(value, max_length, required=True)
