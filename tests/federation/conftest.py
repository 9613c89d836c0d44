"""One bank key pair for the federation tests (2048-bit generation takes seconds)."""
from __future__ import annotations

import pytest

from services.crypto.paillier import PaillierPrivateKey, generate_keypair


@pytest.fixture(scope="session")
def bank_private_key() -> PaillierPrivateKey:
    return generate_keypair(2048)[1]
