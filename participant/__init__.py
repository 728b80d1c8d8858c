"""Participant: site data, local training, privacy step, encryption, the site daemon."""
