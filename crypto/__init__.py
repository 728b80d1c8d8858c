"""CKKS secure aggregation core (TenSEAL), Ed25519 envelopes, hash-chained logs. Imports nothing of the project."""
