"""The only module that touches TenSEAL (``tenseal.sealapi``). Private: use the public API.

What it does:
* builds the SEAL context of a :class:`~crypto.params.CkksParams`;
* generates keys and (de)serializes them as SEAL blobs (bytes);
* encodes two reals per complex slot at the LAST parms_id (the one data prime ``q0``) and
  encrypts with the public key: SEAL encrypts at the key level and mod-switches down, which
  divides the fresh encryption noise by the special prime;
* exposes a ciphertext as its raw coefficients (``uint64[2, N]``, NTT form, mod ``q0``) and
  turns such an array back into a SEAL ciphertext for decryption.

sealapi's save/load take file paths only, so blobs pass through a private temporary file in
``/dev/shm`` (RAM) when it exists, else in the system temporary folder; a file that held a
secret key is overwritten with zeros before it is removed. SEAL compresses with zstd on save;
the raw coefficients are recovered with the zstd decoder linked into the sealapi extension
(via ctypes).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import struct
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as sealapi

from crypto.params import CkksParams

logger = logging.getLogger(__name__)

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

_SEAL_MAGIC = 0xA15E
_SEAL_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compr, reserved, size
_COMPR_NONE = 0
_COMPR_ZSTD = 2
# Ciphertext members: parms_id (4 x u64), is_ntt_form (u8), size, N, coeff_modulus_size (u64),
# scale (f64), correction_factor (u64); then the DynArray: SEAL header, element count (u64), data.
_CT_MEMBERS = struct.Struct("<32sBQQQdQ")


class SealError(Exception):
    """SEAL refused a blob (caller converts it to ``InvalidUpdate`` where input is untrusted)."""


def _tenseal_version() -> str:
    try:
        from importlib.metadata import version

        return version("tenseal")
    except Exception:  # metadata missing: stay on the safe path
        return ""


# ---------------------------------------------------------------------------- file transport
def _tmp_dir() -> str:
    return (
        "/dev/shm"
        if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK)
        else (tempfile.gettempdir())
    )


def _overwrite(path: str) -> None:
    """Overwrite a file with zeros in place (best effort: a secret key passed through it)."""
    with contextlib.suppress(OSError), open(path, "r+b") as f:
        f.write(bytes(os.fstat(f.fileno()).st_size))
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _tmp_path(*, wipe: bool = False) -> Iterator[str]:
    fd, path = tempfile.mkstemp(prefix="cipherfed-", dir=_tmp_dir())
    os.close(fd)
    try:
        yield path
    finally:
        if wipe:
            _overwrite(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _save(obj: Any, *, wipe: bool = False) -> bytes:
    with _tmp_path(wipe=wipe) as path:
        obj.save(path)
        with open(path, "rb") as f:
            return f.read()


def _load(obj: Any, context: Any, blob: bytes, *, wipe: bool = False) -> None:
    with _tmp_path(wipe=wipe) as path:
        with open(path, "wb") as f:
            f.write(blob)
        try:
            obj.load(context, path)
        except Exception as exc:  # SEAL raises ValueError/RuntimeError/IOError variants
            raise SealError(f"SEAL rejected the blob: {exc}") from exc


# ---------------------------------------------------------------------------- zstd (linked in SEAL)
_zstd_lock = threading.Lock()
_zstd: Any = None


def _zstd_lib() -> Any:
    global _zstd
    with _zstd_lock:
        if _zstd is None:
            import _sealapi_cpp

            lib = ctypes.CDLL(_sealapi_cpp.__file__)
            lib.ZSTD_decompress.restype = ctypes.c_size_t
            lib.ZSTD_decompress.argtypes = [
                ctypes.c_void_p,
                ctypes.c_size_t,
                ctypes.c_char_p,
                ctypes.c_size_t,
            ]
            lib.ZSTD_isError.restype = ctypes.c_uint
            lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
            _zstd = lib
        return _zstd


def seal_payload(blob: bytes, max_size: int) -> bytes:
    """The uncompressed members of a SEAL-serialized object (header checked and removed)."""
    if len(blob) < _SEAL_HEADER.size:
        raise SealError("SEAL blob shorter than its header")
    magic, hsize, _major, _minor, compr, _res, size = _SEAL_HEADER.unpack_from(blob)
    if magic != _SEAL_MAGIC or hsize != _SEAL_HEADER.size or size != len(blob):
        raise SealError("not a SEAL blob (bad magic, header size or length)")
    body = blob[_SEAL_HEADER.size :]
    if compr == _COMPR_NONE:
        return body
    if compr != _COMPR_ZSTD:
        raise SealError(f"unsupported SEAL compression mode {compr}")
    lib = _zstd_lib()
    out = ctypes.create_string_buffer(max_size)
    n = lib.ZSTD_decompress(out, max_size, body, len(body))
    if lib.ZSTD_isError(n):
        raise SealError("zstd could not decompress the SEAL blob")
    return out.raw[:n]


def _seal_header(major: int, minor: int, body_len: int) -> bytes:
    return _SEAL_HEADER.pack(
        _SEAL_MAGIC, _SEAL_HEADER.size, major, minor, _COMPR_NONE, 0, _SEAL_HEADER.size + body_len
    )


# ---------------------------------------------------------------------------- direct read
# Reading a ciphertext's coefficients through SEAL's save() costs a zstd compression pass and
# a temporary file. For the pinned TenSEAL build the pybind11 instance holds a pointer to the
# seal::Ciphertext, whose members are laid out as in SEAL 4.1 (see _CT_MEMBERS; the DynArray
# follows at offset 80: pool handle (16), capacity, size, data pointer). The direct read is
# used only after it returned exactly what save() returned for a real ciphertext of this
# context, and every read re-checks the header fields and the first coefficient of each
# polynomial against sealapi's own accessor. CIPHERFED_SEAL_DIRECT_READ=0 disables it.
_FAST_ENABLED = (
    getattr(sealapi, "__name__", "") == "tenseal.sealapi"
    and _tenseal_version() == "0.3.18"
    and os.environ.get("CIPHERFED_SEAL_DIRECT_READ", "1") != "0"
)
_OBJ = struct.Struct("<32s?7xQQQdQ16xQQQ")


def _fast_coeffs(ct: Any, n: int, scale: float) -> U64 | None:
    obj = ctypes.c_void_p.from_address(id(ct) + 16).value
    if not obj:
        return None
    fields = _OBJ.unpack(ctypes.string_at(obj, _OBJ.size))
    _pid, ntt, size, degree, k, ct_scale, _corr, cap, count, data = fields
    if not (ntt and size == 2 and degree == n and k == 1 and ct_scale == scale):
        return None
    if count != 2 * n or cap < count or not data:
        return None
    out = np.empty(2 * n, dtype=np.uint64)
    ctypes.memmove(out.ctypes.data, data, 16 * n)
    if int(out[0]) != ct.data(0) or int(out[n]) != ct.data(1):
        return None
    return out.reshape(2, n)


# ---------------------------------------------------------------------------- context
@dataclass(frozen=True)
class _Template:
    """Byte layout of a SEAL ciphertext at the data level, learnt from a real one."""

    major: int
    minor: int
    parms_id: bytes
    dyn_header: bytes  # the DynArray's own SEAL header (compression none)


class SealContext:
    """SEAL context, encoder and the data prime of one parameter set (no keys)."""

    def __init__(self, params: CkksParams) -> None:
        self.params = params
        enc_params = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
        enc_params.set_poly_modulus_degree(params.poly_modulus_degree)
        enc_params.set_coeff_modulus(
            sealapi.CoeffModulus.Create(
                params.poly_modulus_degree, list(params.coeff_mod_bit_sizes)
            )
        )
        self.context = sealapi.SEALContext(enc_params, True, sealapi.SEC_LEVEL_TYPE.TC128)
        if not self.context.parameters_set():
            raise ValueError(
                f"SEAL rejects parameters {params.name}: {self.context.parameters_error_message()}"
            )
        last = self.context.last_context_data()
        moduli = [m.value() for m in last.parms().coeff_modulus()]
        if len(moduli) != 1:
            raise ValueError("parameters must leave exactly one data prime")
        self.q: int = int(moduli[0])
        if not 2**59 < self.q < 2**60 or (2**60 % self.q) >= 2**40:
            raise ValueError(f"data prime {self.q} outside the supported range")
        self.last_parms_id = self.context.last_parms_id()
        self.encoder = sealapi.CKKSEncoder(self.context)
        self.n = params.poly_modulus_degree
        self._template: _Template | None = None
        self._fast_ok: bool | None = None
        self._lock = threading.Lock()

    def template(self, sample: bytes) -> _Template:
        with self._lock:
            if self._template is None:
                _m, _h, major, minor, *_ = _SEAL_HEADER.unpack_from(sample)
                raw = seal_payload(sample, 2 * 8 * self.n + 4096)
                parms_id = raw[:32]
                off = _CT_MEMBERS.size
                self._template = _Template(
                    major=major,
                    minor=minor,
                    parms_id=parms_id,
                    dyn_header=raw[off : off + _SEAL_HEADER.size],
                )
            return self._template

    def ciphertext_to_coeffs(self, ct: Any) -> U64:
        """Raw coefficients ``uint64[2, N]`` of a size-2 ciphertext at the data level."""
        if self._fast_ok is None:
            slow = self._coeffs_via_save(ct)
            fast = _fast_coeffs(ct, self.n, self.params.scale) if _FAST_ENABLED else None
            self._fast_ok = fast is not None and bool(np.array_equal(fast, slow))
            logger.debug("direct ciphertext read %s", "enabled" if self._fast_ok else "disabled")
            return slow
        if self._fast_ok:
            fast = _fast_coeffs(ct, self.n, self.params.scale)
            if fast is not None:
                return fast
        return self._coeffs_via_save(ct)

    def _coeffs_via_save(self, ct: Any) -> U64:
        blob = _save(ct)
        self.template(blob)
        raw = seal_payload(blob, 2 * 8 * self.n + 4096)
        _pid, is_ntt, size, n, k, _scale, _corr = _CT_MEMBERS.unpack_from(raw)
        if not (is_ntt == 1 and size == 2 and n == self.n and k == 1):
            raise SealError(f"unexpected ciphertext shape: ntt={is_ntt} size={size} N={n} k={k}")
        off = _CT_MEMBERS.size + _SEAL_HEADER.size
        (count,) = struct.unpack_from("<Q", raw, off)
        if count != 2 * self.n:
            raise SealError("unexpected ciphertext data length")
        data = np.frombuffer(raw, dtype="<u8", count=count, offset=off + 8)
        return data.astype(np.uint64).reshape(2, self.n)

    def coeffs_to_ciphertext(self, coeffs: U64, scale: float) -> Any:
        """A SEAL ciphertext from raw coefficients (validated by SEAL on load)."""
        if self._template is None:
            raise SealError("no ciphertext template yet (encrypt or decrypt one first)")
        t = self._template
        data = np.ascontiguousarray(coeffs, dtype="<u8").tobytes()
        members = _CT_MEMBERS.pack(t.parms_id, 1, 2, self.n, 1, scale, 1)
        dyn_body = struct.pack("<Q", 2 * self.n) + data
        dyn = (
            _SEAL_HEADER.pack(
                _SEAL_MAGIC,
                _SEAL_HEADER.size,
                t.major,
                t.minor,
                _COMPR_NONE,
                0,
                _SEAL_HEADER.size + len(dyn_body),
            )
            + dyn_body
        )
        body = members + dyn
        blob = _seal_header(t.major, t.minor, len(body)) + body
        ct = sealapi.Ciphertext()
        _load(ct, self.context, blob)
        return ct

    def encode(self, values: F64) -> Any:
        """Plaintext at the data level: ``values[j] + 1j * values[j + N/2]`` in slot ``j``."""
        half = self.params.slot_count
        padded = np.zeros(self.n, dtype=np.float64)
        padded[: values.shape[0]] = values
        z = padded[:half] + 1j * padded[half:]
        pt = sealapi.Plaintext()
        self.encoder.encode(z.tolist(), self.last_parms_id, self.params.scale, pt)
        return pt

    def decode(self, pt: Any) -> F64:
        z = np.asarray(self.encoder.decode_complex(pt), dtype=np.complex128)
        return np.concatenate([z.real, z.imag])


# ---------------------------------------------------------------------------- keys
def generate_keys(ctx: SealContext) -> tuple[bytes, bytes]:
    """``(secret_key_blob, public_key_blob)``, fresh from SEAL's CSPRNG."""
    keygen = sealapi.KeyGenerator(ctx.context)
    pk = sealapi.PublicKey()
    keygen.create_public_key(pk)
    return _save(keygen.secret_key(), wipe=True), _save(pk)


class SealEncryptor:
    """Public-key encryption (no secret key anywhere in this object)."""

    def __init__(self, ctx: SealContext, public_key_blob: bytes) -> None:
        self.ctx = ctx
        pk = sealapi.PublicKey()
        _load(pk, ctx.context, public_key_blob)
        self._encryptor = sealapi.Encryptor(ctx.context, pk)
        self._lock = threading.Lock()

    def encrypt(self, values: F64) -> U64:
        """Encrypt up to N reals; returns the ciphertext's raw coefficients."""
        pt = self.ctx.encode(values)
        ct = sealapi.Ciphertext()
        with self._lock:
            self._encryptor.encrypt(pt, ct)
        return self.ctx.ciphertext_to_coeffs(ct)


class SealDecryptor:
    """Decryption with the secret key."""

    def __init__(self, ctx: SealContext, secret_key_blob: bytes) -> None:
        self.ctx = ctx
        sk = sealapi.SecretKey()
        _load(sk, ctx.context, secret_key_blob, wipe=True)
        self._secret_key = sk
        self._decryptor = sealapi.Decryptor(ctx.context, sk)
        self._lock = threading.Lock()

    def decrypt(self, coeffs: U64) -> F64:
        """Exact CKKS decryption (N reals, with CKKS's own small error)."""
        if self.ctx._template is None:
            # learn the byte layout from an encryption of zero
            enc = sealapi.Encryptor(self.ctx.context, self._secret_key)
            ct0 = sealapi.Ciphertext()
            enc.encrypt_symmetric(self.ctx.encode(np.zeros(1)), ct0)
            self.ctx.template(_save(ct0))
        ct = self.ctx.coeffs_to_ciphertext(coeffs, self.ctx.params.scale)
        pt = sealapi.Plaintext()
        with self._lock:
            self._decryptor.decrypt(ct, pt)
        return self.ctx.decode(pt)


def load_check(ctx: SealContext, kind: str, blob: bytes) -> None:
    """Raise :class:`SealError` unless ``blob`` is a valid SEAL ``kind`` for ``ctx``."""
    obj = {"public_key": sealapi.PublicKey, "secret_key": sealapi.SecretKey}[kind]()
    _load(obj, ctx.context, blob, wipe=kind == "secret_key")


def secret_key_polynomial_bytes(secret_key_blob: bytes, n: int) -> bytes:
    """Uncompressed polynomial data of a secret-key blob (for leak tests)."""
    return seal_payload(secret_key_blob, 4 * 8 * n + 4096)
