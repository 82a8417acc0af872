"""WooCommerce REST authentication (platforms.md 1.2), as `WC_REST_Authentication` does it.

- HTTP Basic (`ck_…` / `cs_…`), or `consumer_key`/`consumer_secret` in the query string. Real
  WooCommerce only tries these over HTTPS; the simulator accepts them on plain http too, since it
  only listens on loopback.
- OAuth 1.0a one-legged, in the query string or an `Authorization: OAuth …` header: HMAC-SHA1 or
  HMAC-SHA256, signing key = consumer secret + "&", base string built from the request URL and
  every query parameter (duplicates: the last one wins, as in PHP's `$_GET`), each key and value
  `rawurlencode`d and each `k=v` encoded again; timestamp within 15 minutes of the real clock;
  nonce unique per key within that window. The body is not signed.

Outcomes, with the real codes and messages:

- no credentials at all, or Basic with an unknown key: no user, so the route's own permission
  check answers (401 `woocommerce_rest_cannot_view` on a read, `…_cannot_create`/`…_edit`/... on
  writes);
- a known key with the wrong secret, a bad signature, timestamp or nonce, a partial set of OAuth
  parameters: 401 `woocommerce_rest_authentication_error` (or `…_missing_parameter`), before any
  route is matched;
- a `read` key on POST/PUT/PATCH/DELETE: 401 `woocommerce_rest_authentication_error` "The API key
  provided does not have write permissions." (`check_permissions`, also before routing).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, unquote_plus

from bridge_agent.simulators.woocommerce.model import WooError

WINDOW = 15 * 60  # seconds either side of now (check_oauth_timestamp_and_nonce)
_OAUTH_REQUIRED = (
    "oauth_consumer_key",
    "oauth_timestamp",
    "oauth_nonce",
    "oauth_signature",
    "oauth_signature_method",
)
_HEADER_PARAM = re.compile(r'(oauth_[a-z_-]*)=(:?"([^"]*)"|([^,]*))')
_BASIC_REALM = (
    'Basic realm="WooCommerce API. Use a consumer key in the username field and a consumer '
    'secret in the password field."'
)


@dataclass
class ApiKey:
    """One REST API key and the nonces it has used recently."""

    consumer_key: str
    consumer_secret: str
    permissions: str = "read_write"  # read | write | read_write
    nonces: dict[str, int] = field(default_factory=dict)

    def may(self, method: str) -> bool:
        if method in ("GET", "HEAD"):
            return self.permissions in ("read", "read_write")
        if method == "OPTIONS":
            return True
        return self.permissions in ("write", "read_write")


@dataclass(frozen=True, slots=True)
class Presented:
    """What a request carries that authentication looks at."""

    method: str
    url: str  # scheme://host/path, no query: the OAuth base URL
    query: Mapping[str, str]  # last value wins per key
    authorization: str


def rawurlencode(value: str) -> str:
    """PHP's rawurlencode (RFC 3986: only A-Z a-z 0-9 - _ . ~ stay as they are)."""
    return quote(value, safe="-_.~")


def signature_base(method: str, url: str, params: Mapping[str, str]) -> str:
    """The string WooCommerce signs: METHOD & enc(url) & enc(k=v) joined by %26, keys sorted."""
    pairs = [
        rawurlencode(f"{rawurlencode(k)}={rawurlencode(v)}")
        for k, v in sorted(params.items(), key=lambda kv: kv[0].encode())
        if k != "oauth_signature"
    ]
    return f"{method.upper()}&{rawurlencode(url)}&{'%26'.join(pairs)}"


def sign(method: str, url: str, params: Mapping[str, str], secret: str, algo: str) -> str:
    digest = hashlib.sha1 if algo == "HMAC-SHA1" else hashlib.sha256
    base = signature_base(method, url, params)
    mac = hmac.new(f"{secret}&".encode(), base.encode(), digest).digest()
    return base64.b64encode(mac).decode()


def _auth_error(message: str, *, basic: bool = False) -> WooError:
    headers = {"WWW-Authenticate": _BASIC_REALM} if basic else None
    return WooError(401, "woocommerce_rest_authentication_error", message, headers=headers)


class Authenticator:
    def __init__(self, keys: dict[str, ApiKey]) -> None:
        self.keys = keys

    def authenticate(self, req: Presented) -> ApiKey | None:
        """The key the request proves it holds; None when it presents none. Raises WooError."""
        key = self._basic(req)
        if key is None:
            key = self._oauth(req)
        if key is not None and not key.may(req.method):
            if req.method in ("GET", "HEAD"):
                message = "The API key provided does not have read permissions."
            else:
                message = "The API key provided does not have write permissions."
            raise _auth_error(message)
        return key

    def _basic(self, req: Presented) -> ApiKey | None:
        ck = req.query.get("consumer_key", "")
        cs = req.query.get("consumer_secret", "")
        if not (ck and cs):
            ck = cs = ""
            scheme, _, token = req.authorization.partition(" ")
            if scheme.lower() == "basic":
                try:
                    decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    decoded = ""
                ck, _, cs = decoded.partition(":")
        if not (ck and cs):
            return None
        key = self.keys.get(ck)
        if key is None:
            return None  # an unknown key is not an error here: the route check answers 401
        if not hmac.compare_digest(key.consumer_secret.encode(), cs.encode()):
            raise _auth_error("Consumer secret is invalid.", basic=True)
        return key

    def _oauth(self, req: Presented) -> ApiKey | None:
        params = dict(req.query)
        header = req.authorization.strip()
        if header.startswith("OAuth "):
            for m in _HEADER_PARAM.finditer(header):
                params[m.group(1)] = unquote_plus(m.group(3) or m.group(4))
        missing = [p for p in _OAUTH_REQUIRED if not params.get(p)]
        if len(missing) == len(_OAUTH_REQUIRED):
            return None  # not even trying OAuth
        if missing:
            noun = "parameter" if len(missing) == 1 else "parameters"
            raise WooError(
                401,
                "woocommerce_rest_authentication_missing_parameter",
                f"Missing OAuth {noun} {', '.join(missing)}",
            )
        key = self.keys.get(params["oauth_consumer_key"])
        if key is None:
            raise _auth_error("Consumer key is invalid.")
        method = params["oauth_signature_method"]
        if method not in ("HMAC-SHA1", "HMAC-SHA256"):
            raise _auth_error("Invalid signature - signature method is invalid.")
        given = unquote(params["oauth_signature"].replace(" ", "+"))
        expected = sign(req.method, req.url, params, key.consumer_secret, method)
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise _auth_error("Invalid signature - provided signature does not match.")
        self._timestamp_and_nonce(key, params["oauth_timestamp"], params["oauth_nonce"])
        return key

    @staticmethod
    def _timestamp_and_nonce(key: ApiKey, timestamp: str, nonce: str) -> None:
        now = int(time.time())
        try:
            ts = int(timestamp)
        except ValueError:
            ts = 0
        if ts < now - WINDOW or ts > now + WINDOW:
            raise _auth_error("Invalid timestamp.")
        for old, seen in list(key.nonces.items()):
            if seen < now - WINDOW:
                del key.nonces[old]
        if nonce in key.nonces:
            raise _auth_error("Invalid nonce - nonce has already been used.")
        key.nonces[nonce] = ts
