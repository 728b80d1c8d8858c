"""Key holder service: holds the CKKS secret key and decrypts only policy-approved aggregates."""
