"""The embedded runtime's parts: each module starts one local server a fresh machine needs."""
