"""Small typing and parameter helpers over python-pkcs11 0.10 (no PKCS#11 calls here)."""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import TYPE_CHECKING, cast

import pkcs11

if TYPE_CHECKING:
    from pkcs11.types import DecryptMixin, DeriveMixin, EncryptMixin, SignMixin, WrapMixin

    class SymKey(pkcs11.SecretKey, EncryptMixin, DecryptMixin, SignMixin, WrapMixin, DeriveMixin):
        """Static view of a secret key object (python-pkcs11 mixes these in at run time)."""

else:
    SymKey = pkcs11.SecretKey


class NotASecretKeyError(TypeError):
    pass


def as_key(obj: pkcs11.Object) -> SymKey:
    if not isinstance(obj, pkcs11.SecretKey):
        raise NotASecretKeyError("not a secret key object")
    return cast(SymKey, obj)


class _KeyDerivationStringData(ctypes.Structure):
    """CK_KEY_DERIVATION_STRING_DATA (PKCS#11 v2.40 section 2.16.1): {pData, ulLen}."""

    _fields_ = (("pData", ctypes.c_void_p), ("ulLen", ctypes.c_ulong))


def encrypt_data_param(data: bytes) -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
    """Raw CK_KEY_DERIVATION_STRING_DATA for CKM_DES3_ECB_ENCRYPT_DATA.

    python-pkcs11 0.10 only builds this struct for AES_ECB_ENCRYPT_DATA; for the DES3 variant
    it passes bytes through as the raw parameter. The returned buffer owns ``data`` and must be
    kept alive by the caller until C_DeriveKey has returned.
    """
    buf = ctypes.create_string_buffer(data, len(data))
    struct = _KeyDerivationStringData(ctypes.cast(buf, ctypes.c_void_p), len(data))
    return bytes(struct), buf


def encrypt(key: SymKey, data: bytes, mechanism: pkcs11.Mechanism, param: object = None) -> bytes:
    """One-shot C_Encrypt returning bytes (python-pkcs11 also offers a streaming form)."""
    out = key.encrypt(data, mechanism=mechanism, mechanism_param=param)
    if not isinstance(out, bytes):
        raise TypeError("expected a one-shot result")
    return out


def decrypt(key: SymKey, data: bytes, mechanism: pkcs11.Mechanism, param: object = None) -> bytes:
    out = key.decrypt(data, mechanism=mechanism, mechanism_param=param)
    if not isinstance(out, bytes):
        raise TypeError("expected a one-shot result")
    return out


def load_openssl_config(path: str) -> None:
    """Apply an OpenSSL config file (e.g. activating the default + legacy providers) now.

    SoftHSM links the system libcrypto, which reads OPENSSL_CONF only the first time anything
    in the process initialises it, and Python's own hashlib/ssl usually does that first. So
    setting the variable just before loading the PKCS#11 module is too late; this loads the
    file into the same (shared) libcrypto, which is what single DES (ISO 9797-1 alg. 3) needs.
    """
    libcrypto = ctypes.CDLL(ctypes.util.find_library("crypto") or "libcrypto.so.3")
    load = libcrypto.CONF_modules_load_file
    load.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong)
    load.restype = ctypes.c_int
    if load(path.encode(), None, 0) != 1:
        raise OSError(f"OpenSSL refused config {path}")
