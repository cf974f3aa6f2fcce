"""Embedded Anthropic-compatible API on 127.0.0.1: the local backend and the test emulator."""
