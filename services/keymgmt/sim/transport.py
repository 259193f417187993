"""The operator's transport key exchanged under its RSA public key (RSA-OAEP), the other way
to give a SIM product a transport key the operator can use (the first is a key ceremony from
the operator's components, keys/ceremonies.py).

    POST /v1/sim/transport-keys/{operator} {"public_key_pem", "version"?}
      -> {"label", "kcv", "kcv_method", "wrapped_key", "mechanism"}

In ONE HSM-worker call: an AES-128 token key (wrap/unwrap) is generated sensitive and, for
this one export, extractable; the operator's RSA public key (2048 bits or more) is imported
as a session object; the AES key is wrapped under it with CKM_RSA_PKCS_OAEP (SHA-1, MGF1-SHA1:
the only OAEP parameters SoftHSM 2.6.1 accepts); the key is then made non-extractable for
good and the public key object destroyed. Only the operator's private key opens the answer,
so the bureau never knows the key in clear and the operator holds the key its file is under.
"""

from __future__ import annotations

from typing import Any, Final, cast

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pkcs11 import MGF, Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass

from services.keymgmt.hsm.kcv import KcvMethod, kcv_of
from services.keymgmt.hsm.p11 import as_key
from services.keymgmt.hsm.session import Hsm, KeyInfo, key_info

MECHANISM_NAME: Final = "RSA-OAEP (SHA-1, MGF1-SHA1)"
MIN_RSA_BITS: Final = 2048


def operator_public_key(pem: str) -> tuple[bytes, bytes]:
    """(modulus, public exponent) of the operator's RSA public key; ValueError says why not."""
    try:
        key = load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError("public_key_pem is not a PEM public key") from exc
    if not isinstance(key, RSAPublicKey):
        raise ValueError("public_key_pem is not an RSA public key")
    if key.key_size < MIN_RSA_BITS:
        raise ValueError(f"the RSA key has {key.key_size} bits, at least {MIN_RSA_BITS} needed")
    numbers = key.public_numbers()
    n, e = numbers.n, numbers.e
    return n.to_bytes((n.bit_length() + 7) // 8, "big"), e.to_bytes(
        (e.bit_length() + 7) // 8, "big"
    )


def exchange_transport_key(
    hsm: Hsm, label: str, modulus: bytes, exponent: bytes
) -> tuple[KeyInfo, bytes]:
    """Generate the operator's transport key as `label` and wrap it under its RSA key."""
    hsm.ensure_absent(label)
    template: dict[Attribute, Any] = {
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: True,
        Attribute.SIGN: True,  # for the CMAC KCV, cleared below
    }
    caps = MechanismFlag.WRAP | MechanismFlag.UNWRAP
    key = as_key(
        hsm.session.generate_key(
            KeyType.AES, 128, label=label, store=True, capabilities=caps, template=template
        )
    )
    try:
        public = hsm.session.create_object(
            {
                Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                Attribute.KEY_TYPE: KeyType.RSA,
                Attribute.MODULUS: modulus,
                Attribute.PUBLIC_EXPONENT: exponent,
                Attribute.WRAP: True,
                Attribute.TOKEN: False,
            }
        )
        try:
            wrapper = cast(Any, public)
            wrapped = bytes(
                wrapper.wrap_key(
                    key,
                    mechanism=Mechanism.RSA_PKCS_OAEP,
                    mechanism_param=(Mechanism.SHA_1, MGF.SHA1, None),
                )
            )
        finally:
            public.destroy()
        key[Attribute.EXTRACTABLE] = False  # exported once, to the operator only
        cmac = kcv_of(key, KcvMethod.AES_CMAC)
        key[Attribute.SIGN] = False
        info = key_info(key, label, (cmac,))
    except Exception:
        key.destroy()
        raise
    hsm.forget(label)
    return info, wrapped
