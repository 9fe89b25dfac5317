#!/usr/bin/env python3
"""Independent verifier for the Stile token format, versions 1 and 2.

This is an independent implementation of ``docs/token-format.md``, written
from that document alone (not from the reference Rust crate), using the
Python standard library and, for Ed25519 (version 2), the ``cryptography``
package from PyPI (OpenSSL's Ed25519; ``tests/python/requirements.txt``). It
exists to show that the specification is precise enough for a third party to
implement a compatible verifier. For each valid Ed25519 vector it also signs
the body again with the listed private key and compares the signature byte
for byte (Ed25519 signatures are deterministic).

It implements:

* strict unpadded base64url decoding (spec section 2);
* parsing and validation of the binary body (section 3);
* the verification algorithm, step by step, with the same reason codes
  (section 4);
* the request-path canonicaliser (section 5);
* session credentials: the link's session policy, the session part, its tag
  and its checks (section 9);

and checks them against the test vectors file (section 6).

Usage::

    python3 tests/python/verify_vectors.py [path/to/token-vectors.json]

The default vectors file is ``docs/token-vectors.json`` relative to the
repository root (two directories above this script). One line is printed per
failing case, then a final line ``N passed, M failed``. The exit status is 0
only when nothing failed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# --------------------------------------------------------------------------
# Constants from the specification
# --------------------------------------------------------------------------

TOKEN_MIN_CHARS = 59  # section 2: 44 bytes (26 header + 2 scope + 16 tag)
TOKEN_MAX_CHARS = 723  # section 2: 542 bytes (the largest body + a 64-byte signature)
# Section 1 / section 7: the version byte names the algorithm and the tag length.
VERSION_HMAC = 0x01  # first 16 bytes of HMAC-SHA256
VERSION_ED25519 = 0x02  # a 64-byte Ed25519 signature
TAG_LEN = {VERSION_HMAC: 16, VERSION_ED25519: 64}
ALGORITHM = {VERSION_HMAC: "hmac-sha256", VERSION_ED25519: "ed25519"}
TTL_MAX = 2_678_400  # section 3: 31 days

# Flag bits (section 3).
FLAG_PREFIX = 0x01
FLAG_NBF = 0x02
FLAG_IP = 0x04
FLAG_COUNTRIES = 0x08
FLAG_COUNTRY_DENY = 0x10
FLAG_SUBJECT = 0x20
FLAG_CHANNEL = 0x40
FLAG_EXT = 0x80  # an extension byte follows the channel
EXT_SESSION = 0x01  # the extension byte: a session policy follows
SESSION_MAX_SECS = 604_800  # section 3: 7 days

# Reason codes (section 4).
OK = "ok"
MALFORMED = "malformed"
UNKNOWN_KEY = "unknown_key"
BAD_SIGNATURE = "bad_signature"
EXPIRED = "expired"
NOT_YET_VALID = "not_yet_valid"
SCOPE = "scope"
IP = "ip"
GEO = "geo"
SESSION_MAX = "session_max"
SESSION_EXPIRED = "session_expired"

BASE64URL_ALPHABET = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)
BASE64URL_VALUE = {c: i for i, c in enumerate(BASE64URL_ALPHABET)}

VISIBLE_ASCII = frozenset(range(0x21, 0x7F))  # 0x21..=0x7E
CHANNEL_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789._:-")
UPPER_ASCII = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
ASCII_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

# Minimum counts of the vectors file: fewer means the file lost cases.
MIN_VECTORS = 100
MIN_PATHS = 80

# The IPv4-mapped IPv6 range, which MUST NOT appear with family 6.
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


class Malformed(Exception):
    """Raised for any violation of sections 2 and 3 (reason `malformed`)."""


# --------------------------------------------------------------------------
# Section 2: strict base64url (RFC 4648 section 5, no padding)
# --------------------------------------------------------------------------


def b64url_decode_strict(text: str) -> bytes:
    """Decode unpadded base64url, rejecting every non-canonical spelling.

    Rejects characters outside the URL-safe alphabet (including ``=``), a
    length congruent to 1 modulo 4, and non-zero unused low bits in the last
    character, so each byte string has exactly one accepted spelling.
    """
    if len(text) % 4 == 1:
        raise Malformed("impossible base64 length")
    values = []
    for ch in text:
        value = BASE64URL_VALUE.get(ch)
        if value is None:
            raise Malformed(f"character {ch!r} outside the base64url alphabet")
        values.append(value)

    # Unused low bits of the last character: 4 bits when len % 4 == 2,
    # 2 bits when len % 4 == 3.
    remainder = len(values) % 4
    if remainder == 2 and values[-1] & 0x0F:
        raise Malformed("non-zero trailing bits")
    if remainder == 3 and values[-1] & 0x03:
        raise Malformed("non-zero trailing bits")

    out = bytearray()
    for start in range(0, len(values), 4):
        group = values[start : start + 4]
        bits = 0
        for value in group:
            bits = (bits << 6) | value
        nbits = 6 * len(group)
        nbytes = nbits // 8  # 4 chars -> 3 bytes, 3 -> 2, 2 -> 1
        bits >>= nbits - 8 * nbytes  # drop the unused (zero) low bits
        out += bits.to_bytes(nbytes, "big")
    return bytes(out)


# --------------------------------------------------------------------------
# Section 3: body layout
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class IpBinding:
    """An IP binding: the family (4 or 6), prefix length and network address."""

    family: int
    prefix: int
    address: ipaddress.IPv4Address | ipaddress.IPv6Address

    def __str__(self) -> str:
        return f"{self.address}/{self.prefix}"


@dataclass(frozen=True)
class Token:
    """The decoded claims of a token (section 3)."""

    flags: int
    key_id: int
    token_id: bytes
    issued_at: int
    ttl: int
    nbf_offset: int | None
    scope: bytes
    ip: IpBinding | None
    countries: list[bytes] | None
    subject: bytes | None
    channel: bytes | None
    session_policy: dict | None = None

    @property
    def scope_is_prefix(self) -> bool:
        return bool(self.flags & FLAG_PREFIX)

    @property
    def expires_at(self) -> int:
        return self.issued_at + self.ttl

    @property
    def not_before(self) -> int | None:
        if self.nbf_offset is None:
            return None
        return self.issued_at + self.nbf_offset

    @property
    def country_deny(self) -> bool:
        return bool(self.flags & FLAG_COUNTRY_DENY)

    def claims(self) -> dict:
        """The claims in the shape used by the vectors file."""
        countries = None
        if self.countries is not None:
            kind = "deny" if self.country_deny else "allow"
            countries = {kind: [c.decode("ascii") for c in self.countries]}
        return {
            "key_id": self.key_id,
            "token_id": self.token_id.hex(),
            "issued_at": self.issued_at,
            "not_before": self.not_before,
            "expires_at": self.expires_at,
            "scope": self.scope.decode("ascii"),
            "scope_is_prefix": self.scope_is_prefix,
            "ip": None if self.ip is None else str(self.ip),
            "countries": countries,
            "subject": None if self.subject is None else self.subject.decode("ascii"),
            "channel": None if self.channel is None else self.channel.decode("ascii"),
        }


class Reader:
    """A bounds-checked big-endian cursor over the body bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Malformed("field runs past the end of the body")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def remaining(self) -> int:
        return len(self.data) - self.pos


def parse_length_prefixed(reader: Reader, max_len: int, allowed: frozenset[int]) -> bytes:
    """Read a length byte n (1..=max_len) and n bytes drawn from `allowed`."""
    n = reader.uint(1)
    if not 1 <= n <= max_len:
        raise Malformed("length out of range")
    value = reader.take(n)
    if any(b not in allowed for b in value):
        raise Malformed("byte outside the allowed set")
    return value


def parse_scope(reader: Reader, is_prefix: bool) -> bytes:
    """Scope: visible ASCII, starts with '/', ends with '/' iff PREFIX."""
    scope = parse_length_prefixed(reader, 255, VISIBLE_ASCII)
    if scope[0] != ord("/"):
        raise Malformed("scope does not start with '/'")
    ends_with_slash = scope[-1] == ord("/")
    if is_prefix and not ends_with_slash:
        raise Malformed("prefix scope does not end with '/'")
    if not is_prefix and ends_with_slash:
        raise Malformed("exact scope ends with '/'")
    return scope


def parse_ip(reader: Reader) -> IpBinding:
    """IP binding: family, prefix length, address; host bits must be zero."""
    family = reader.uint(1)
    prefix = reader.uint(1)
    if family == 4:
        width, address = 32, ipaddress.IPv4Address(reader.take(4))
    elif family == 6:
        width, address = 128, ipaddress.IPv6Address(reader.take(16))
    else:
        raise Malformed("unknown address family")
    if not 1 <= prefix <= width:
        raise Malformed("prefix length out of range")
    host_mask = (1 << (width - prefix)) - 1
    if int(address) & host_mask:
        raise Malformed("host bits set beyond the prefix")
    if family == 6 and address in IPV4_MAPPED:
        raise Malformed("IPv4-mapped address with family 6")
    return IpBinding(family, prefix, address)


def parse_countries(reader: Reader) -> list[bytes]:
    """Country list: 1..=32 upper-case two-letter codes, strictly ascending."""
    count = reader.uint(1)
    if not 1 <= count <= 32:
        raise Malformed("country count out of range")
    codes = [reader.take(2) for _ in range(count)]
    for code in codes:
        if any(b not in UPPER_ASCII for b in code):
            raise Malformed("country code is not upper-case ASCII letters")
    for earlier, later in zip(codes, codes[1:]):
        if not earlier < later:
            raise Malformed("countries not strictly ascending")
    return codes


def parse_body(body: bytes) -> Token:
    """Parse and validate the body (everything before the 16-byte tag)."""
    reader = Reader(body)

    version = reader.uint(1)
    if version not in TAG_LEN:
        raise Malformed("unknown version")
    flags = reader.uint(1)
    if flags & FLAG_COUNTRY_DENY and not flags & FLAG_COUNTRIES:
        raise Malformed("COUNTRY_DENY without COUNTRIES")

    key_id = reader.uint(4)
    token_id = reader.take(8)
    issued_at = reader.uint(8)
    ttl = reader.uint(4)
    if not 1 <= ttl <= TTL_MAX:
        raise Malformed("ttl out of range")
    if issued_at + ttl >= 2**64:
        raise Malformed("expires_at not below 2^64")

    nbf_offset = None
    if flags & FLAG_NBF:
        nbf_offset = reader.uint(4)
        if not nbf_offset < ttl:
            raise Malformed("nbf_offset not below ttl")

    scope = parse_scope(reader, bool(flags & FLAG_PREFIX))
    ip = parse_ip(reader) if flags & FLAG_IP else None
    countries = parse_countries(reader) if flags & FLAG_COUNTRIES else None
    subject = (
        parse_length_prefixed(reader, 64, VISIBLE_ASCII)
        if flags & FLAG_SUBJECT
        else None
    )
    channel = (
        parse_length_prefixed(reader, 32, CHANNEL_BYTES)
        if flags & FLAG_CHANNEL
        else None
    )

    session_policy = None
    if flags & FLAG_EXT:
        ext = reader.uint(1)
        if ext != EXT_SESSION:
            raise Malformed("extension byte 0 or with reserved bits")
        idle, max_secs = reader.uint(4), reader.uint(4)
        bind_v4, bind_v6 = reader.uint(1), reader.uint(1)
        if not 1 <= idle <= max_secs <= SESSION_MAX_SECS:
            raise Malformed("session policy times out of range")
        if bind_v4 > 32 or bind_v6 > 128:
            raise Malformed("session policy binding prefix out of range")
        session_policy = {"idle_secs": idle, "max_secs": max_secs, "bind_v4": bind_v4, "bind_v6": bind_v6}

    if reader.remaining() != 0:
        raise Malformed("bytes left after the last field")

    return Token(
        session_policy=session_policy,
        flags=flags,
        key_id=key_id,
        token_id=token_id,
        issued_at=issued_at,
        ttl=ttl,
        nbf_offset=nbf_offset,
        scope=scope,
        ip=ip,
        countries=countries,
        subject=subject,
        channel=channel,
    )


# --------------------------------------------------------------------------
# Section 4: verification algorithm
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What the verifier knows about the request (section 4 inputs)."""

    path: str  # already canonical (section 5)
    client_ip: str | None
    country: str | None
    now: int


@dataclass(frozen=True)
class Policy:
    leeway: int = 5
    unknown_country_allowed: bool = False  # default: deny


def client_ip_matches(binding: IpBinding, client_ip: str | None) -> bool:
    """Step 9: compare the client address under the binding's prefix mask."""
    if client_ip is None:
        return False
    try:
        client = ipaddress.ip_address(client_ip)
    except ValueError:
        return False  # treated as an unknown client address
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
        client = client.ipv4_mapped
    if client.version != binding.family:
        return False
    shift = client.max_prefixlen - binding.prefix
    return (int(client) >> shift) == (int(binding.address) >> shift)


def client_country(value: str | None) -> bytes | None:
    """Section 4 inputs: the client country as a geo source reports it.

    Two ASCII letters in either case; anything else, and the codes ISO 3166-1
    leaves to user assignment (AA, QM-QZ, XA-XZ, ZZ), is unknown (None).
    """
    if value is None or len(value) != 2 or not all(c in ASCII_LETTERS for c in value):
        return None
    code = value.upper()
    if code in ("AA", "ZZ") or code[0] == "X" or (code[0] == "Q" and code[1] >= "M"):
        return None
    return code.encode("ascii")


def country_admitted(token: Token, country: str | None, policy: Policy) -> bool:
    """Step 10: allow/deny list, or the unknown-country policy (for both kinds of list)."""
    assert token.countries is not None
    code = client_country(country)
    if code is None:
        return policy.unknown_country_allowed
    in_list = code in token.countries
    return in_list != token.country_deny


def verify(
    token_str: str,
    keys: dict[int, tuple[str, bytes]],
    request: Request,
    policy: Policy,
    session: "SessionCheck | None" = None,
) -> tuple[str, Token | None]:
    """Run section 4 in order; return (reason, parsed token or None).

    `keys` maps a key id to (algorithm, material): the HMAC secret, or the
    Ed25519 public key."""
    # 1. Size, checked before decoding.
    if not TOKEN_MIN_CHARS <= len(token_str) <= TOKEN_MAX_CHARS:
        return MALFORMED, None

    # 2. Decode strictly, and 3. parse the body; the version says how many of
    # the last bytes are the tag (16 for version 1, 64 for version 2).
    try:
        raw = b64url_decode_strict(token_str)
        tag_len = TAG_LEN.get(raw[0]) if raw else None
        if tag_len is None:
            raise Malformed("unknown version")
        if len(raw) < tag_len:
            raise Malformed("shorter than the tag")
        body, tag = raw[:-tag_len], raw[-tag_len:]
        token = parse_body(body)
    except Malformed:
        return MALFORMED, None

    # Section 9.2: the session part's faults that need the link (its policy
    # and the ttl bound) are structure faults too, so `malformed` comes first.
    if session is not None and not session.fits(token):
        return MALFORMED, token

    # 4. Key: one of the token's algorithm.
    key = keys.get(token.key_id)
    if key is None or key[0] != ALGORITHM[raw[0]]:
        return UNKNOWN_KEY, token

    # 5. MAC, compared in constant time; or the Ed25519 signature (OpenSSL
    # refuses a non-canonical S).
    if raw[0] == VERSION_HMAC:
        expected = hmac.new(key[1], body, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(expected, tag):
            return BAD_SIGNATURE, token
    else:
        try:
            Ed25519PublicKey.from_public_bytes(key[1]).verify(tag, body)
        except InvalidSignature:
            return BAD_SIGNATURE, token

    now, leeway = request.now, policy.leeway

    if session is None:
        # 6. Expiry.
        if now >= token.expires_at + leeway:
            return EXPIRED, token

        # 7. Start (nbf_offset is 0 without NBF).
        if now + leeway < token.issued_at + (token.nbf_offset or 0):
            return NOT_YET_VALID, token
    else:
        # Section 9.4: the session's tag and times replace steps 6 and 7.
        verdict = session.check(raw, token, now, leeway)
        if verdict is not None:
            return verdict, token

    # 8. Scope: exact match, or a prefix ending in '/'.
    path = request.path.encode("utf-8")
    if token.scope_is_prefix:
        in_scope = path.startswith(token.scope)
    else:
        in_scope = path == token.scope
    if not in_scope:
        return SCOPE, token

    # 9. IP binding.
    if token.ip is not None and not client_ip_matches(token.ip, request.client_ip):
        return IP, token

    # 10. Country list.
    if token.countries is not None and not country_admitted(
        token, request.country, policy
    ):
        return GEO, token

    # Section 9.4: the session's client binding, after the link's claims.
    if session is not None and not session.client_ok(token, request.client_ip):
        return IP, token

    # 11. Valid.
    return OK, token


# --------------------------------------------------------------------------
# Section 9: session credentials
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionCheck:
    """A parsed session part and the session secrets of the key ring."""

    body: bytes
    tag: bytes
    session_id: int
    started_at: int
    issued_at: int
    ttl: int
    bind: IpBinding | None
    secrets: dict

    def fits(self, token: Token) -> bool:
        """Section 9.2's rules that need the link: it carries a session policy,
        `issued_at` is not before `started_at`, and `ttl` is within `max_secs`."""
        policy = token.session_policy
        return (
            policy is not None
            and self.started_at <= self.issued_at
            and 1 <= self.ttl <= policy["max_secs"]
        )

    def check(self, link_raw: bytes, token: Token, now: int, leeway: int) -> str | None:
        """Section 9.4, S1-S6 (after `fits` and the link's steps 1-5)."""
        policy = token.session_policy
        assert policy is not None
        secret = self.secrets.get(token.key_id)
        if secret is None:
            return UNKNOWN_KEY
        msg = len(link_raw).to_bytes(2, "big") + link_raw + self.body
        if not hmac.compare_digest(hmac.new(secret, msg, hashlib.sha256).digest()[:16], self.tag):
            return BAD_SIGNATURE
        if self.started_at + leeway < token.issued_at + (token.nbf_offset or 0):
            return NOT_YET_VALID
        if self.started_at >= token.expires_at + leeway:
            return EXPIRED
        if now + leeway < self.issued_at:
            return NOT_YET_VALID
        if now >= self.started_at + policy["max_secs"] + leeway:
            return SESSION_MAX
        if now >= self.issued_at + self.ttl + leeway:
            return SESSION_EXPIRED
        return None

    def client_ok(self, token: Token, client_ip: str | None) -> bool:
        policy = token.session_policy
        assert policy is not None
        try:
            client = ipaddress.ip_address(client_ip) if client_ip is not None else None
        except ValueError:
            client = None
        if client is None:
            return self.bind is None and policy["bind_v4"] == 0 and policy["bind_v6"] == 0
        if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
            client = client.ipv4_mapped
        need = policy["bind_v4"] if client.version == 4 else policy["bind_v6"]
        if self.bind is None:
            return need == 0
        return client_ip_matches(self.bind, str(client)) and self.bind.prefix >= need


def parse_session_part(part: str, secrets: dict) -> SessionCheck:
    """Section 9.2: decode and parse the session part (raises Malformed)."""
    raw = b64url_decode_strict(part)
    if len(raw) < 30 + 16:
        raise Malformed("session part too short")
    body, tag = raw[:-16], raw[-16:]
    reader = Reader(body)
    if reader.uint(1) != 1:
        raise Malformed("unknown session version")
    flags = reader.uint(1)
    if flags & ~0x01:
        raise Malformed("reserved session flag bit")
    session_id = reader.uint(8)
    started_at, issued_at, ttl = reader.uint(8), reader.uint(8), reader.uint(4)
    bind = parse_ip(reader) if flags & 0x01 else None
    if reader.remaining() != 0:
        raise Malformed("bytes left after the session body")
    if issued_at + ttl >= 2**64:
        raise Malformed("session expiry not below 2^64")
    return SessionCheck(body, tag, session_id, started_at, issued_at, ttl, bind, secrets)


def verify_session(
    credential: str, keys: dict, secrets: dict, request: Request, policy: Policy
) -> tuple[str, Token | None, SessionCheck | None]:
    """Section 9.4: split at the one '.', parse both parts, verify."""
    if credential.count(".") != 1:
        return MALFORMED, None, None
    link, part = credential.split(".")
    try:
        session = parse_session_part(part, secrets)
    except Malformed:
        return MALFORMED, None, None
    verdict, token = verify(link, keys, request, policy, session)
    return verdict, token, session


# --------------------------------------------------------------------------
# Section 5: canonical paths
# --------------------------------------------------------------------------

PATH_MAX_BYTES = 2048

# Rule 2: raw bytes kept as they are.
KEPT = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    b"-._~!$&'()*+,=:@/"
)
# Rule 3: raw bytes accepted but written percent-encoded.
ENCODED = frozenset(b'"[]^{|}')
# Rule 5: decoded bytes that are rejected; every other decoded byte below 0x80
# outside KEPT is written percent-encoded.
CONTROL = frozenset(range(0x00, 0x20)) | {0x7F}
DECODED_REJECTED = frozenset(b"/%\\;") | CONTROL
# Rule 5: solidus look-alikes that NFKC keeps.
SOLIDUS_LOOK_ALIKES = frozenset([0x2215, 0x2044, 0x2216, 0x29F5, 0x29F8, 0x29F9])


def code_point_allowed(char: str) -> bool:
    """Rule 5 for one decoded non-ASCII code point."""
    code_point = ord(char)
    if 0x80 <= code_point <= 0x9F or code_point in SOLIDUS_LOOK_ALIKES:
        return False
    # Unassigned or private-use in this Python's Unicode data (the spec's table
    # is Unicode 18.0; an older table only rejects more).
    if unicodedata.category(char) in ("Cn", "Co"):
        return False
    return unicodedata.normalize("NFKC", char) == char


HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def pct(byte: int) -> bytes:
    """Percent-encode one byte with upper-case hex."""
    return b"%%%02X" % byte


def utf8_sequence_length(lead: int) -> int:
    """Length of the UTF-8 sequence a lead byte >= 0x80 announces (0: invalid)."""
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0  # stray continuation byte, overlong lead (C0/C1) or > U+10FFFF


def canonicalize_path(path: str) -> str | None:
    """Return the canonical form of a request path, or None if rejected."""
    raw = path.encode("utf-8")  # any non-ASCII input is rejected below (rule 4)

    # Rule 1.
    if not raw.startswith(b"/") or len(raw) > PATH_MAX_BYTES:
        return None

    def escape_at(i: int) -> int | None:
        """The byte spelled by a well-formed '%HH' at raw[i], else None."""
        if raw[i : i + 1] != b"%":
            return None
        hh = raw[i + 1 : i + 3]
        if len(hh) != 2 or any(c not in HEX_DIGITS for c in hh):
            return None
        return int(hh, 16)

    out = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte != ord("%"):
            if byte in KEPT:  # rule 2
                out.append(byte)
            elif byte in ENCODED:  # rule 3
                out += pct(byte)
            else:  # rule 4 (space, controls, >= 0x80, '\\', ';', '#', '?', '<', '>', '`')
                return None
            i += 1
            continue

        # Rule 5: '%HH'.
        decoded = escape_at(i)
        if decoded is None:
            return None  # '%' not followed by two hex digits
        if decoded in DECODED_REJECTED:
            return None
        if decoded in KEPT:
            out.append(decoded)
            i += 3
        elif decoded < 0x80:
            out += pct(decoded)  # space, '"', '#', '<', '>', '?', '[', ...
            i += 3
        elif decoded >= 0x80:
            # One complete, strictly valid UTF-8 character, spelled entirely
            # with escapes.
            length = utf8_sequence_length(decoded)
            if length == 0:
                return None
            sequence = bytearray()
            for k in range(length):
                b = escape_at(i + 3 * k)
                if b is None:
                    return None
                sequence.append(b)
            try:
                char = sequence.decode("utf-8")  # strict: no overlong/surrogates
            except UnicodeDecodeError:
                return None
            if len(char) != 1:
                return None
            if not code_point_allowed(char):
                return None
            for b in sequence:
                out += pct(b)
            i += 3 * length
        else:  # pragma: no cover - every byte value is classified above
            return None

    # Rule 1 again, after canonicalisation.
    if len(out) > PATH_MAX_BYTES:
        return None

    # Rule 6: segments (the element before the leading '/' is skipped).
    segments = bytes(out).split(b"/")[1:]
    for index, segment in enumerate(segments):
        is_last = index == len(segments) - 1
        if segment == b"":
            if not is_last:
                return None  # '//'
            continue
        head = segment
        for delimiter in (b"%3F", b"%23"):
            head = head.split(delimiter, 1)[0]
        if head in (b".", b".."):
            return None
        for part in (head, segment):
            if part.endswith(b".") or part.endswith(b"%20"):
                return None  # trailing dot or space

    return out.decode("ascii")


# --------------------------------------------------------------------------
# Vector checks
# --------------------------------------------------------------------------


def policy_from(data: dict) -> Policy:
    """A `policy` object of the vectors file (section 6)."""
    return Policy(
        leeway=data["leeway_secs"],
        unknown_country_allowed=data["unknown_country"] == "allow",
    )


def check_vector(
    vector: dict, keys: dict[int, tuple[str, bytes]], private: dict[int, bytes], policy: Policy
) -> str | None:
    """Check one entry of `vectors`; return a failure message or None."""
    if "policy" in vector:
        policy = policy_from(vector["policy"])
    req = vector["request"]
    request = Request(
        path=req["path"],
        client_ip=req.get("client_ip"),
        country=req.get("country"),
        now=req["now"],
    )
    verdict, token = verify(vector["token"], keys, request, policy)
    expect = vector["expect"]
    if verdict != expect:
        return f"expected {expect}, got {verdict}"
    if expect == OK:
        if "claims" not in vector:
            return "valid vector without claims"
        assert token is not None
        got = token.claims()
        if got != vector["claims"]:
            diffs = sorted(
                k
                for k in set(got) | set(vector["claims"])
                if got.get(k, "<absent>") != vector["claims"].get(k, "<absent>")
            )
            details = ", ".join(
                f"{k}: expected {vector['claims'].get(k, '<absent>')!r}, "
                f"got {got.get(k, '<absent>')!r}"
                for k in diffs
            )
            return f"claims differ ({details})"
        raw = b64url_decode_strict(vector["token"])
        if raw[0] == VERSION_ED25519:
            # Deterministic signatures: the listed private key signs the body to the same bytes.
            body, sig = raw[:-64], raw[-64:]
            again = Ed25519PrivateKey.from_private_bytes(private[token.key_id]).sign(body)
            if again != sig:
                return "re-signing the body with the listed private key gives another signature"
    return None


def check_session(vector: dict, keys: dict, secrets: dict, policy: Policy) -> str | None:
    """Check one entry of `sessions`; return a failure message or None."""
    req = vector["request"]
    request = Request(path=req["path"], client_ip=req.get("client_ip"), country=req.get("country"), now=req["now"])
    verdict, token, session = verify_session(vector["credential"], keys, secrets, request, policy)
    if verdict != vector["expect"]:
        return f"expected {vector['expect']}, got {verdict}"
    if verdict == OK:
        assert token is not None and session is not None
        got = {
            "session_id": f"{session.session_id:016x}",
            "started_at": session.started_at,
            "issued_at": session.issued_at,
            "ttl": session.ttl,
            "bind": None if session.bind is None else str(session.bind),
            "session_policy": token.session_policy,
            "link_token_id": token.token_id.hex(),
        }
        if got != vector.get("session"):
            return f"session {got} != {vector.get('session')}"
    return None


def check_path(case: dict) -> str | None:
    """Check one entry of `paths`; return a failure message or None."""
    expected = case["canonical"]
    got = canonicalize_path(case["input"])
    if got != expected:
        return f"expected {expected!r}, got {got!r}"
    if got is not None and canonicalize_path(got) != got:
        return f"not idempotent: {got!r} -> {canonicalize_path(got)!r}"
    return None


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        vectors_path = Path(argv[1])
    else:
        repo_root = Path(__file__).resolve().parents[2]
        vectors_path = repo_root / "docs" / "token-vectors.json"

    with open(vectors_path, encoding="utf-8") as f:
        data = json.load(f)

    # A verifier holds HMAC secrets and Ed25519 public keys; the private keys are
    # used only to re-sign valid vectors.
    keys: dict[int, tuple[str, bytes]] = {}
    private: dict[int, bytes] = {}
    for key in data["keys"]:
        if key["algorithm"] == "hmac-sha256":
            keys[key["id"]] = ("hmac-sha256", bytes.fromhex(key["secret_hex"]))
        elif key["algorithm"] == "ed25519":
            keys[key["id"]] = ("ed25519", bytes.fromhex(key["public_hex"]))
            private[key["id"]] = bytes.fromhex(key["private_hex"])
            derived = Ed25519PrivateKey.from_private_bytes(private[key["id"]]).public_key().public_bytes_raw()
            if derived != keys[key["id"]][1]:
                print(f"FAIL key {key['id']}: public_hex is not the private key's public key")
                return 1
        else:
            print(f"FAIL key {key['id']}: unknown algorithm {key['algorithm']!r}")
            return 1
    policy = policy_from(data["policy"])

    passed = failed = 0

    def record(label: str, check) -> None:
        nonlocal passed, failed
        try:
            problem = check()
        except Exception as exc:  # a crash is a failure, not an abort
            problem = f"exception: {exc!r}"
        if problem is None:
            passed += 1
        else:
            failed += 1
            print(f"FAIL {label}: {problem}")

    for vector in data["vectors"]:
        record(f"vector {vector['name']!r}", lambda v=vector: check_vector(v, keys, private, policy))
    for case in data["paths"]:
        record(f"path {case['input']!r}", lambda c=case: check_path(c))

    # Section 9.3: session secrets, derived from each key's material (an HMAC
    # secret or an Ed25519 private seed); a verifier of Ed25519 links is given it.
    secrets: dict[int, bytes] = {}
    for key in data["keys"]:
        material = bytes.fromhex(key.get("secret_hex") or key["private_hex"])
        derived = hmac.new(material, b"stile session v1", hashlib.sha256).digest()
        if derived.hex() != key["session_secret_hex"]:
            failed += 1
            print(f"FAIL key {key['id']}: session_secret_hex is not derived from the key")
        secrets[key["id"]] = bytes.fromhex(key["session_secret_hex"])
    sessions = data.get("sessions", [])
    for vector in sessions:
        record(f"session {vector['name']!r}", lambda v=vector: check_session(v, keys, secrets, policy))
    session_reasons = {v["expect"] for v in sessions}
    for reason in (OK, MALFORMED, UNKNOWN_KEY, BAD_SIGNATURE, EXPIRED, NOT_YET_VALID, SESSION_MAX, SESSION_EXPIRED, SCOPE, IP, GEO):
        if reason not in session_reasons:
            failed += 1
            print(f"FAIL no session vector expects {reason}")

    # Floors: an emptied or truncated file must not pass.
    if len(data["vectors"]) < MIN_VECTORS:
        failed += 1
        print(f"FAIL only {len(data['vectors'])} vectors (at least {MIN_VECTORS} expected)")
    if len(data["paths"]) < MIN_PATHS:
        failed += 1
        print(f"FAIL only {len(data['paths'])} path cases (at least {MIN_PATHS} expected)")
    def version_of(token: str) -> int | None:
        try:
            raw = b64url_decode_strict(token)
        except Malformed:
            return None
        return raw[0] if raw else None

    ed25519 = [v for v in data["vectors"] if version_of(v["token"]) == VERSION_ED25519]
    if not any(v["expect"] == OK for v in ed25519) or not any(v["expect"] == BAD_SIGNATURE for v in ed25519):
        failed += 1
        print("FAIL the Ed25519 (version 2) vectors lack a valid or a bad_signature case")
    expected = {vector["expect"] for vector in data["vectors"]}
    for reason in (OK, MALFORMED, UNKNOWN_KEY, BAD_SIGNATURE, EXPIRED, NOT_YET_VALID, SCOPE, IP, GEO):
        if reason not in expected:
            failed += 1
            print(f"FAIL no vector expects {reason}")

    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
