"""Mosquitto password files: hashing and editing, without the mosquitto_passwd binary.

Format (Mosquitto 2.0, ``apps/mosquitto_passwd`` and ``src/password_mosquitto.h``): one
``username:hash`` line per user, where the hash is
``$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512 digest>`` with a 12-byte salt,
101 iterations (Mosquitto 2.0's ``PW_DEFAULT_ITERATIONS``) and a 64-byte digest. Mosquitto
2.0 also reads ``$6$<salt>$<sha512(password + salt)>`` (1.x files); :func:`verify` accepts
both. ``tests/test_provisioning.py`` checks the hash against ``mosquitto_passwd`` output
and a real broker.

The file is rewritten atomically (a temporary file in the same directory, then rename), so
a broker reloading on SIGHUP never reads half a file; mode 600.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

SALT_BYTES = 12
DEFAULT_ITERATIONS = 101


def hash_password(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """A Mosquitto ``$7$`` (PBKDF2-SHA512) password hash."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    encode = base64.b64encode
    return f"$7${iterations}${encode(salt).decode()}${encode(digest).decode()}"


def verify(password: str, hashed: str) -> bool:
    """Does ``password`` match a ``$7$`` or ``$6$`` Mosquitto hash?"""
    parts = hashed.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations, salt, digest = int(parts[2]), parts[3], parts[4]
            expected = hashlib.pbkdf2_hmac(
                "sha512", password.encode("utf-8"), base64.b64decode(salt), iterations
            )
        elif len(parts) == 4 and parts[1] == "6":
            salt, digest = parts[2], parts[3]
            expected = hashlib.sha512(password.encode("utf-8") + base64.b64decode(salt)).digest()
        else:
            return False
        return hmac.compare_digest(expected, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


def new_password() -> str:
    """A random password: 32 URL-safe characters (192 bits), no character needing quotes."""
    return secrets.token_urlsafe(24)


class PasswordFile:
    """A Mosquitto password file: read, set or remove one user's line, write back atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> dict[str, str]:
        """username → hash, in file order; comments and blank lines are not kept."""
        if not self.path.exists():
            return {}
        entries: dict[str, str] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.lstrip().startswith("#") or ":" not in line:
                continue
            user, hashed = line.split(":", 1)
            entries[user] = hashed
        return entries

    def get(self, username: str) -> str | None:
        return self.entries().get(username)

    def set(self, username: str, password: str) -> None:
        if ":" in username or not username.strip():
            raise ValueError(f"invalid Mosquitto username {username!r}")
        entries = self.entries()
        entries[username] = hash_password(password)
        self._write(entries)

    def remove(self, username: str) -> bool:
        entries = self.entries()
        if username not in entries:
            return False
        del entries[username]
        self._write(entries)
        return True

    def _write(self, entries: dict[str, str]) -> None:
        text = "".join(f"{user}:{hashed}\n" for user, hashed in entries.items())
        write_private(self.path, text)


def write_private(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Write a file only its owner can read, atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
