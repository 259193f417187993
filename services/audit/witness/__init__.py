"""The log's witness (c2sp.org/tlog-witness, cosignatures c2sp.org/tlog-cosignature v1).

It runs as its own process (`python -m services.audit.witness`, port 8108) with its own Ed25519
key and its own file store, and shares no credential with audit or keymgmt: no database URL,
no Kafka, no service token. It trusts the log's public key (a C2SP vkey) given in its
settings, verifies the consistency proof itself, and cosigns only a checkpoint that extends
the last one it cosigned for that origin.

It lives under services/audit/ because it serves the audit log alone and reads nothing of
audit's code but the RFC 9162 and C2SP primitives in shared/ (a package of its own under
services/ would make it look like an eighth bureau service with a schema and a topic; it has
neither). In a real deployment it belongs on another host, run by another party.
"""
