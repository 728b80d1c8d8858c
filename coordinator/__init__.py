"""Coordinator service: runs rounds and sums ciphertexts with the public context only."""
