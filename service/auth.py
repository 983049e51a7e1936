"""API keys: each key belongs to one owner; only sha256 digests are kept in memory.

RELUSWAP_API_KEYS holds `owner:key` pairs, or `owner:sha256:<hex>` so the plain key need not be in
the environment at all. A request's key is hashed and compared with every digest in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from .settings import Settings

DEV_OWNER = "dev"


class ConfigurationError(RuntimeError):
    """The service refuses to start with this configuration."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_keys(entries: list[str]) -> dict[str, str]:
    """['alice:k1', 'bob:sha256:<hex>'] -> {digest: owner}."""
    digests: dict[str, str] = {}
    for entry in entries:
        owner, sep, key = entry.partition(":")
        if not sep or not owner or not key:
            raise ConfigurationError("RELUSWAP_API_KEYS entries must be owner:key or owner:sha256:<hex>")
        kind, sep2, hexdigest = key.partition(":")
        if kind == "sha256" and sep2:
            if len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest.lower()):
                raise ConfigurationError(f"api key for {owner!r}: sha256 digest must be 64 hex digits")
            digests[hexdigest.lower()] = owner
        else:
            digests[hash_key(key)] = owner
    return digests


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class KeyRing:
    def __init__(self, settings: Settings):
        self.digests = parse_keys(settings.api_keys)
        # No keys: only a local development server, bound to loopback, may run (everyone is "dev").
        self.open = not self.digests
        if self.open and not (settings.dev_mode and is_loopback(settings.host)):
            raise ConfigurationError(
                "no API keys configured: set RELUSWAP_API_KEYS=owner:key[,owner:key...], or run a local "
                "development server with RELUSWAP_DEV_MODE=1 bound to a loopback host (RELUSWAP_HOST=127.0.0.1)"
            )

    def owner(self, key: str | None) -> str | None:
        if self.open:
            return DEV_OWNER
        if not key:
            return None
        digest = hash_key(key)
        found = None
        for known, owner in self.digests.items():  # no early exit: timing does not depend on position
            if hmac.compare_digest(digest, known):
                found = owner
        return found
