"""The CKKS secret key at rest: generated once, stored only encrypted (scrypt + AES-GCM).

``<state>/secret_key.enc`` (0600) holds ``SecretContext.export_secret_key_encrypted``;
``<state>/public_context.bin`` (0644) the public context for operators. The plaintext
secret key is never written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from crypto import CkksParams, InvalidUpdate
from crypto.secret import DEFAULT_SCRYPT_LOG2_N, SecretContext

logger = logging.getLogger(__name__)

SECRET_KEY_FILE = "secret_key.enc"
PUBLIC_CONTEXT_FILE = "public_context.bin"


class KeyStoreError(Exception):
    """The stored key cannot be used (wrong passphrase, damaged file, other parameters)."""


def ensure_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file (``mode``, fsync) renamed over ``path``; fsync the folder."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_or_create_secret(
    state_dir: str | os.PathLike[str],
    params: CkksParams,
    passphrase: bytes,
    *,
    scrypt_log2_n: int = DEFAULT_SCRYPT_LOG2_N,
) -> tuple[SecretContext, bool]:
    """The key holder's secret context and whether it was generated now (first start)."""
    state = Path(state_dir)
    ensure_private_dir(state)
    path = state / SECRET_KEY_FILE
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyStoreError(f"{path}: mode {mode:04o}; the encrypted key must be 0600")
        try:
            secret = SecretContext.import_secret_key_encrypted(path.read_bytes(), passphrase)
        except InvalidUpdate as exc:
            raise KeyStoreError(f"{path}: cannot unlock the secret key: {exc}") from None
        if secret.fingerprint != params.fingerprint:
            raise KeyStoreError(
                f"{path}: stored key uses CKKS parameters {secret.params.name!r}, the "
                f"federation file asks for {params.name!r}"
            )
        public_path = state / PUBLIC_CONTEXT_FILE
        if not public_path.exists():  # a first start that stopped between the two writes
            atomic_write(public_path, secret.public().to_bytes(), 0o644)
        logger.info("loaded the encrypted CKKS secret key (%s) from %s", params.name, path)
        return secret, False
    secret = SecretContext.generate(params)
    blob = secret.export_secret_key_encrypted(passphrase, scrypt_log2_n=scrypt_log2_n)
    atomic_write(path, blob, 0o600)
    atomic_write(state / PUBLIC_CONTEXT_FILE, secret.public().to_bytes(), 0o644)
    logger.info("generated CKKS keys (%s); secret key stored encrypted at %s", params.name, path)
    return secret, True
