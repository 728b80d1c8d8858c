"""CipherFed composition root: configuration, the ``cipherfed`` command line, simulations."""

__version__ = "0.1.0"
