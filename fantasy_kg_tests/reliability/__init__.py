"""Reliability and security suite: crashes, hostile input/output, load, network faults, secrets."""
