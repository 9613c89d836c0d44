"""ID alignment: ECDH private set intersection over ristretto255, incremental.

The bank (holding ids A) and the partner (holding ids B) learn pseudonymous join ids for
A ∩ B and nothing about the ids outside it. Each party P has a secret scalar k_P
(`PsiPartyKey`) and both share public session parameters (`PsiSessionParams`: session id,
salt, expiry). H maps an id to a ristretto255 point (hash-to-group, below). Blinding with k
is scalar multiplication, and it commutes: k_B·(k_A·H(x)) = k_A·(k_B·H(x)), so a doubly
blinded point is the same whichever side blinded first.

Who sends what, and what the receiver of each message learns: the `psi` rows of the table of
message kinds, services/protocol/kinds.py (rendered in README.md; semi-honest parties, the
exchange topics readable by the two endpoints only); `wire` turns these values into those
messages. For the bank's ids (the partner's go the other way in the same steps at the same
time): 0, the bank sends `PsiSessionParams`; 1, `blind` sends `BlindedIds`, k_A·H(a) for each
bank id a in a uniformly random order; 2, the partner's `reblind` answers `DoublyBlindedIds`,
k_B·k_A·H(a) in the order received; 3, locally, each side intersects its own ids' doubly blinded
points (the answers to its step 1) with those it computed for the other side's ids (its own
step 2) and learns #(A ∩ B), which of its own ids are in A ∩ B and their join ids, and for each
match the position of that id in the other side's shuffled step-1 message (a random position,
so nothing more).

Neither side learns any id outside the intersection: a point k_B·k_A·H(b) for b not in A is
random-looking to the bank (it would need k_B to test a guess b). The join id is a keyed
BLAKE2b of the doubly blinded point, identical on both sides, different in every session.

What is learnt beyond the intersection, stated so auditors can check it: both set sizes
(#A and #B, from the message lengths; dummy padding would hide them and is not done), and,
in incremental use, the arrival of each new match: when the partner re-blinds a later batch of
new bank ids it learns at that moment which of its own ids have just joined the intersection,
and the size of the batch. Each incremental batch is therefore a membership query against the
other side's set; a party that sends made-up ids learns whether they are in the other's set.
That is inherent to any incremental PSI; bound it with the session expiry (`expires_at_s`,
`DEFAULT_SESSION_TTL_S`) and by auditing the number of ids each side sends.

Hash to group: H(x) = ristretto255_from_hash(SHA-512(len(DST) || DST || salt || utf8(x))), the
libsodium map of 64 uniform bytes to a point (two Elligator maps, added, as in RFC 9380's
hash_to_ristretto255). We do not use RFC 9380's expand_message_xmd: with a 64-byte output
one SHA-512 call over an unambiguously framed input (fixed-length DST and salt, then the id)
is already a random oracle to the group, and it costs one hash per id instead of three. The
per-session salt makes points of one session useless in another (no precomputed tables).

Incremental alignment: `PsiParty` keeps its own ids' doubly blinded points and the doubly
blinded points it computed for the other side, so new ids on either side go through steps 1
and 2 alone (blinded with the same keys) and are matched against what is stored. The whole
state survives a restart through `PsiParty.snapshot()`, stored in the party's own Redis by `state`.

Key rotation: a session ends at `expires_at_s`; every method refuses to work after it
(`PsiSessionExpiredError`). Rotating means a new session (new salt, new scalars) and a full
run; join ids change with the session, so downstream tables are re-keyed by the new mapping.
Scalars never leave their party; destroy the old key and state once the new session is live.

Cost: each side does one hash-to-group and two scalar multiplications per id (about 14 us
and 50 us each with libsodium here); both steps run on a process pool in chunks.

Library: PyNaCl (1.6.2 here) does not expose libsodium's ristretto255 functions, so we use
`rbcl` (nthparty, MIT), which bundles libsodium and wraps exactly those functions.

>>> params = PsiSessionParams.new(now_s=0)
>>> bank = PsiParty(PsiPartyKey.generate(PsiRole.BANK, params), now_s=lambda: 1)
>>> partner = PsiParty(PsiPartyKey.generate(PsiRole.PARTNER, params), now_s=lambda: 1)
>>> bank.receive(partner.reblind(bank.blind(["c1", "c2", "c3"])))
>>> partner.receive(bank.reblind(partner.blind(["c2", "c3", "x9"])))
>>> sorted(bank.intersect().join_ids) == sorted(partner.intersect().join_ids) == ["c2", "c3"]
True
>>> bank.intersect().join_ids["c2"] == partner.intersect().join_ids["c2"]
True
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import enum
import hashlib
import importlib
import itertools
import multiprocessing
import os
import secrets
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Self, TypeVar

import numpy as np
import rbcl

from services.core.errors import CipherstreamError
from services.protocol.identity import JOIN_ID_BYTES

POINT_BYTES = 32
"""A ristretto255 point is always encoded in 32 bytes (canonical encoding)."""

SCALAR_BYTES = 32
SESSION_ID_BYTES = 16
SALT_BYTES = 32
"""Join ids are 128-bit: collisions among even 10^9 ids have probability below 10^-20."""

HASH_TO_GROUP_DST = b"cipherstream/psi/v1/ristretto255/sha512"
JOIN_ID_PERSON = b"cs-psi-join-v1"
DEFAULT_SESSION_TTL_S = 30 * 24 * 3600
"""A month: long enough for daily incremental alignment, short enough to bound how many
membership queries one key answers before rotation."""

PARALLEL_MIN_IDS = 20_000
"""Below this, a process pool costs more than it saves (about 50 ms to start, 65 us per id)."""

CHUNK_IDS = 4096
"""Ids per task on the pool: small enough (a quarter of a second) that the cores finish a
step together on a noisy shared machine, large enough that pickling is negligible."""

_T = TypeVar("_T")

# rbcl writes its bundled libsodium to a new temporary file on every import and never deletes
# it (2.8 MB per process start). Once loaded the file is not needed: the mapping stays.
with contextlib.suppress(AttributeError, OSError):
    os.unlink(importlib.import_module("rbcl._sodium").lib_path)

_from_hash: Callable[[bytes], bytes] = rbcl.crypto_core_ristretto255_from_hash
_scalarmult: Callable[[bytes, bytes], bytes] = rbcl.crypto_scalarmult_ristretto255
_scalar_random: Callable[[], bytes] = rbcl.crypto_core_ristretto255_scalar_random
_scalar_reduce: Callable[[bytes], bytes] = rbcl.crypto_core_ristretto255_scalar_reduce


class PsiError(CipherstreamError):
    """Base of every PSI error."""


class PsiMessageError(PsiError):
    """A PSI message is malformed, has an invalid point, or does not fit what was sent."""


class PsiSessionMismatchError(PsiError):
    """A message belongs to another session, or comes back from the wrong party."""


class PsiSessionExpiredError(PsiError):
    """The session is past its expiry: rotate keys and run a new session."""


class PsiRole(enum.Enum):
    """The two parties. The role travels in every message so a party never re-blinds its own."""

    BANK = 1
    PARTNER = 2


@dataclass(frozen=True)
class PsiSessionParams:
    """Public parameters both parties agree on before step 1 (sent by the initiator).

    >>> params = PsiSessionParams.new(ttl_s=3600, now_s=1_700_000_000)
    >>> params.expires_at_s - params.created_at_s, len(params.session_id), len(params.salt)
    (3600, 16, 32)
    """

    session_id: bytes
    salt: bytes
    created_at_s: int
    expires_at_s: int

    def __post_init__(self) -> None:
        if len(self.session_id) != SESSION_ID_BYTES or len(self.salt) != SALT_BYTES:
            raise PsiMessageError(f"session id must be {SESSION_ID_BYTES} bytes and salt {SALT_BYTES} bytes")
        if self.expires_at_s <= self.created_at_s:
            raise PsiMessageError("a session must expire after it is created")

    @classmethod
    def new(
        cls,
        *,
        ttl_s: int = DEFAULT_SESSION_TTL_S,
        now_s: int | None = None,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> PsiSessionParams:
        """A fresh session: random id and salt, expiring `ttl_s` seconds from now."""
        created_at_s = int(time.time()) if now_s is None else now_s
        return cls(token_bytes(SESSION_ID_BYTES), token_bytes(SALT_BYTES), created_at_s, created_at_s + ttl_s)

    def hash_prefix(self) -> bytes:
        """The framed prefix hashed before each id (see the module docstring)."""
        return bytes([len(HASH_TO_GROUP_DST)]) + HASH_TO_GROUP_DST + self.salt

    def join_id(self, doubly_blinded_point: bytes) -> str:
        """The pseudonymous join id of a doubly blinded point: keyed by the session, so join
        ids of different sessions cannot be linked.

        >>> params = PsiSessionParams.new(now_s=0)
        >>> len(params.join_id(bytes(32)))
        32
        """
        return hashlib.blake2b(
            doubly_blinded_point,
            digest_size=JOIN_ID_BYTES,
            key=self.session_id + self.salt,
            person=JOIN_ID_PERSON,
        ).hexdigest()


@dataclass(frozen=True)
class PsiPartyKey:
    """One party's secret scalar for one session. Keep it in the party's secret store; it never
    crosses to the other side. The scalar is left out of repr so it never reaches a log.

    >>> params = PsiSessionParams.new(now_s=0)
    >>> key = PsiPartyKey.generate(PsiRole.BANK, params)
    >>> PsiPartyKey.from_bytes(key.to_bytes()) == key, len(key.to_bytes())
    (True, 97)
    """

    role: PsiRole
    params: PsiSessionParams
    scalar: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.scalar) != SCALAR_BYTES or not any(self.scalar):
            raise PsiError(f"a PSI scalar is {SCALAR_BYTES} non-zero bytes")

    @classmethod
    def generate(cls, role: PsiRole, params: PsiSessionParams, *, seed: bytes | None = None) -> PsiPartyKey:
        """A uniformly random non-zero scalar mod the group order (from libsodium's CSPRNG), or
        one derived from a 64-byte `seed` for reproducible tests."""
        scalar = _scalar_random() if seed is None else _scalar_reduce(hashlib.sha512(seed).digest())
        return cls(role, params, scalar)

    def to_bytes(self) -> bytes:
        """The key as one party stores it in its secret store (97 bytes: role, session id, salt,
        creation and expiry, scalar); it never crosses to the other side."""
        params = self.params
        return _KEY_LAYOUT.pack(self.role.value, params.session_id, params.salt, params.created_at_s,
                                params.expires_at_s, self.scalar)

    @classmethod
    def from_bytes(cls, encoded: bytes) -> PsiPartyKey:
        if len(encoded) != _KEY_LAYOUT.size or encoded[0] not in (1, 2):
            raise PsiError("not a serialised PsiPartyKey")
        role, session_id, salt, created_at_s, expires_at_s, scalar = _KEY_LAYOUT.unpack(encoded)
        return cls(PsiRole(role), PsiSessionParams(session_id, salt, created_at_s, expires_at_s), scalar)


_KEY_LAYOUT = struct.Struct(f">B{SESSION_ID_BYTES}s{SALT_BYTES}sqq{SCALAR_BYTES}s")


@dataclass(frozen=True)
class _PointBatch:
    """A run of 32-byte points: the whole of one batch or a chunk of it starting at `offset`.
    On the wire it is a `PsiBlindedIds` or `PsiDoublyBlindedIds` (`wire`)."""

    session_id: bytes
    sender: PsiRole
    batch_id: int
    offset: int
    points: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.points) % POINT_BYTES:
            raise PsiMessageError(f"points must be a multiple of {POINT_BYTES} bytes, got {len(self.points)}")
        if len(self.session_id) != SESSION_ID_BYTES:
            raise PsiMessageError(f"session id must be {SESSION_ID_BYTES} bytes")
        if self.batch_id < 0 or self.offset < 0:
            raise PsiMessageError(f"batch id {self.batch_id} and offset {self.offset} must not be negative")

    def __len__(self) -> int:
        return len(self.points) // POINT_BYTES

    def point(self, position: int) -> bytes:
        return self.points[position * POINT_BYTES : (position + 1) * POINT_BYTES]

    def iter_points(self) -> Iterator[bytes]:
        points = self.points
        return (points[start : start + POINT_BYTES] for start in range(0, len(points), POINT_BYTES))

    def chunks(self, max_points: int) -> Iterator[Self]:
        """Split into messages of at most `max_points` points (about 32 bytes each) for Kafka;
        each chunk is answered on its own, in any order."""
        if max_points < 1:
            raise ValueError("max_points must be at least 1")
        step_bytes = max_points * POINT_BYTES
        for start in range(0, max(len(self.points), 1), step_bytes):
            yield type(self)(
                self.session_id,
                self.sender,
                self.batch_id,
                self.offset + start // POINT_BYTES,
                self.points[start : start + step_bytes],
            )


@dataclass(frozen=True)
class BlindedIds(_PointBatch):
    """Step 1: k_sender·H(id) for the sender's ids, in a random order the sender remembers.

    >>> params = PsiSessionParams.new(now_s=0)
    >>> bank = PsiParty(PsiPartyKey.generate(PsiRole.BANK, params), now_s=lambda: 1)
    >>> message = bank.blind(["c1", "c2", "c3"])
    >>> len(message), len(message.points)
    (3, 96)
    >>> [len(chunk) for chunk in message.chunks(max_points=2)]
    [2, 1]
    """


@dataclass(frozen=True)
class DoublyBlindedIds(_PointBatch):
    """Step 2: the answer to one `BlindedIds` (or chunk): each point multiplied by the
    re-blinder's scalar, same batch id, offset and order. `sender` is the re-blinder."""


@dataclass(frozen=True)
class PsiAlignment:
    """What one party gets: its own ids in the intersection, each with its join id."""

    join_ids: Mapping[str, str]

    @property
    def intersection_size(self) -> int:
        return len(self.join_ids)


def _hash_blind_chunk(task: tuple[bytes, bytes, list[bytes]]) -> bytes:
    """Steps H and 1 for one chunk of ids, in a worker process: concatenated points, in order."""
    prefix, scalar, encoded_ids = task
    base = hashlib.sha512(prefix)
    blinded = []
    for encoded_id in encoded_ids:
        hasher = base.copy()
        hasher.update(encoded_id)
        blinded.append(_scalarmult(scalar, _from_hash(hasher.digest())))
    return b"".join(blinded)


def _reblind_chunk(task: tuple[bytes, bytes, int]) -> bytes:
    """Step 2 for one chunk of points. libsodium rejects a non-canonical encoding and a
    result at the identity, so a malformed point cannot pass silently."""
    scalar, points, first_position = task
    reblinded = []
    for start in range(0, len(points), POINT_BYTES):
        try:
            reblinded.append(_scalarmult(scalar, points[start : start + POINT_BYTES]))
        except RuntimeError as exc:
            position = first_position + start // POINT_BYTES
            raise PsiMessageError(f"point at position {position} is not a valid ristretto255 point") from exc
    return b"".join(reblinded)


@dataclass
class _PendingBatch:
    """Ids sent in one BlindedIds, in message order, and which answers have arrived."""

    ids: list[str]
    answered: bytearray

    @property
    def complete(self) -> bool:
        return all(self.answered)


@dataclass(frozen=True)
class PsiPartyState:
    """Everything a party needs to carry on after a restart: its key, the batches awaiting an
    answer, its own ids' doubly blinded points and those it computed for the other side.
    It holds the party's own raw ids: store it where the party keeps its customer data
    (`state.state_to_bytes`, in the party's own Redis).

    >>> params = PsiSessionParams.new(now_s=0)
    >>> bank = PsiParty(PsiPartyKey.generate(PsiRole.BANK, params), now_s=lambda: 1)
    >>> _ = bank.blind(["c1"])
    >>> state = bank.snapshot()
    >>> [ids for ids, answered in state.pending.values()], dict(state.own_doubly_blinded)
    ([('c1',)], {})
    """

    key: PsiPartyKey
    next_batch_id: int
    pending: Mapping[int, tuple[tuple[str, ...], bytes]]
    own_doubly_blinded: Mapping[str, bytes]
    other_doubly_blinded: frozenset[bytes]


class PsiParty:
    """One side of the protocol: `blind` (step 1), `reblind` the other side's (step 2),
    `receive` the answer to its own, `intersect` (step 3). Any number of batches, in any
    order, for incremental alignment; see the module docstring for the whole exchange.

    `processes` and `executor` set where the scalar multiplications run: inline below
    `parallel_min_ids` ids, otherwise on `executor` if given, else on a process pool
    started for the call. `random_bytes` feeds the random order of each `BlindedIds` (the OS
    CSPRNG by default; inject a deterministic source for reproducible tests). `now_s` is the clock
    checked against the session expiry.
    """

    def __init__(
        self,
        key: PsiPartyKey,
        *,
        processes: int | None = None,
        executor: concurrent.futures.Executor | None = None,
        parallel_min_ids: int = PARALLEL_MIN_IDS,
        random_bytes: Callable[[int], bytes] = os.urandom,
        now_s: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self._processes = processes or os.cpu_count() or 1
        self._executor = executor
        self._parallel_min_ids = parallel_min_ids
        self._random_bytes = random_bytes
        self._now_s = now_s
        self._next_batch_id = 0
        self._pending: dict[int, _PendingBatch] = {}
        self._sent_ids: set[str] = set()
        self._own_point_to_id: dict[bytes, str] = {}
        self._own_id_to_point: dict[str, bytes] = {}
        self._other_points: set[bytes] = set()
        self._join_ids: dict[str, str] = {}

    @property
    def role(self) -> PsiRole:
        return self.key.role

    @property
    def session_id(self) -> bytes:
        return self.key.params.session_id

    def blind(self, ids: Sequence[str]) -> BlindedIds:
        """Step 1: hash and blind ids not sent before, in a random order. Ids already sent in
        this session are skipped: sending one twice would show the other side a repeat.

        >>> params = PsiSessionParams.new(now_s=0)
        >>> bank = PsiParty(PsiPartyKey.generate(PsiRole.BANK, params), now_s=lambda: 1)
        >>> len(bank.blind(["c1", "c2"])), len(bank.blind(["c2", "c3"]))
        (2, 1)
        """
        self._check_not_expired()
        already_sent = self._sent_ids
        new_ids = list(dict.fromkeys(sent_id for sent_id in ids if sent_id not in already_sent))
        already_sent.update(new_ids)
        new_ids = self._random_order(new_ids)
        encoded_ids = [new_id.encode() for new_id in new_ids]
        prefix = self.key.params.hash_prefix()
        tasks = [(prefix, self.key.scalar, chunk) for chunk in self._split(encoded_ids)]
        points = b"".join(self._map(_hash_blind_chunk, tasks, len(new_ids)))
        batch_id = self._next_batch_id
        self._next_batch_id += 1
        self._pending[batch_id] = _PendingBatch(new_ids, bytearray(len(new_ids)))
        return BlindedIds(self.session_id, self.role, batch_id, 0, points)

    def reblind(self, blinded: BlindedIds) -> DoublyBlindedIds:
        """Step 2: multiply the other side's points by our scalar, answer in the same order,
        and keep the results to match against our own ids."""
        self._check_not_expired()
        self._check_from_other_side(blinded)
        count = len(blinded)
        step_bytes = CHUNK_IDS * POINT_BYTES
        tasks = [
            (self.key.scalar, blinded.points[start : start + step_bytes], start // POINT_BYTES)
            for start in range(0, len(blinded.points), step_bytes)
        ]
        answer = DoublyBlindedIds(
            self.session_id, self.role, blinded.batch_id, blinded.offset, b"".join(self._map(_reblind_chunk, tasks, count))
        )
        own_point_to_id = self._own_point_to_id
        for point in answer.iter_points():
            self._other_points.add(point)
            own_id = own_point_to_id.get(point)
            if own_id is not None:
                self._join_ids[own_id] = self.key.params.join_id(point)
        return answer

    def receive(self, answer: DoublyBlindedIds) -> None:
        """Take the other side's answer to one of our `BlindedIds` (or a chunk of it)."""
        self._check_not_expired()
        self._check_from_other_side(answer)
        pending = self._pending.get(answer.batch_id)
        if pending is None:
            raise PsiMessageError(f"no batch {answer.batch_id} awaits an answer")
        if answer.offset + len(answer) > len(pending.ids):
            raise PsiMessageError(
                f"answer covers positions {answer.offset}..{answer.offset + len(answer)} "
                f"of batch {answer.batch_id}, which has {len(pending.ids)}"
            )
        other_points = self._other_points
        join_id = self.key.params.join_id
        for position, point in enumerate(answer.iter_points(), start=answer.offset):
            own_id = pending.ids[position]
            pending.answered[position] = 1
            self._own_point_to_id[point] = own_id
            self._own_id_to_point[own_id] = point
            if point in other_points:
                self._join_ids[own_id] = join_id(point)
        if pending.complete:
            del self._pending[answer.batch_id]

    def intersect(self) -> PsiAlignment:
        """Step 3: our ids in the intersection so far, with their join ids."""
        return PsiAlignment(dict(self._join_ids))

    def joined_count(self) -> int:
        """How many of our ids are in the intersection so far (a mark for `joined_after`)."""
        return len(self._join_ids)

    def joined_after(self, mark: int) -> dict[str, str]:
        """Our ids that joined the intersection after `joined_count()` returned `mark`, in the
        order they joined: incremental alignment without copying the whole intersection."""
        return dict(itertools.islice(self._join_ids.items(), mark, None))

    def snapshot(self) -> PsiPartyState:
        """The state to store, so alignment can go on after a restart (`PsiParty.restore`)."""
        return PsiPartyState(
            self.key,
            self._next_batch_id,
            {batch_id: (tuple(batch.ids), bytes(batch.answered)) for batch_id, batch in self._pending.items()},
            dict(self._own_id_to_point),
            frozenset(self._other_points),
        )

    @classmethod
    def restore(
        cls,
        state: PsiPartyState,
        *,
        processes: int | None = None,
        executor: concurrent.futures.Executor | None = None,
        parallel_min_ids: int = PARALLEL_MIN_IDS,
        random_bytes: Callable[[int], bytes] = os.urandom,
        now_s: Callable[[], float] = time.time,
    ) -> PsiParty:
        """A party that carries on from a snapshot; options as for the constructor.

        >>> params = PsiSessionParams.new(now_s=0)
        >>> bank = PsiParty(PsiPartyKey.generate(PsiRole.BANK, params), now_s=lambda: 1)
        >>> partner = PsiParty(PsiPartyKey.generate(PsiRole.PARTNER, params), now_s=lambda: 1)
        >>> sent = bank.blind(["c1"])
        >>> bank = PsiParty.restore(bank.snapshot(), now_s=lambda: 1)  # as if stored and read back
        >>> bank.receive(partner.reblind(sent))
        >>> partner.receive(bank.reblind(partner.blind(["c1"])))
        >>> list(bank.intersect().join_ids)
        ['c1']
        """
        party = cls(
            state.key,
            processes=processes,
            executor=executor,
            parallel_min_ids=parallel_min_ids,
            random_bytes=random_bytes,
            now_s=now_s,
        )
        party._next_batch_id = state.next_batch_id
        party._pending = {
            batch_id: _PendingBatch(list(ids), bytearray(answered)) for batch_id, (ids, answered) in state.pending.items()
        }
        party._own_id_to_point = dict(state.own_doubly_blinded)
        party._sent_ids = set(state.own_doubly_blinded)
        for ids, _ in state.pending.values():
            party._sent_ids.update(ids)
        party._own_point_to_id = {point: own_id for own_id, point in state.own_doubly_blinded.items()}
        party._other_points = set(state.other_doubly_blinded)
        join_id = state.key.params.join_id
        party._join_ids = {
            own_id: join_id(point) for point, own_id in party._own_point_to_id.items() if point in party._other_points
        }
        return party

    def _check_not_expired(self) -> None:
        if self._now_s() >= self.key.params.expires_at_s:
            raise PsiSessionExpiredError(
                f"PSI session {self.session_id.hex()} expired at {self.key.params.expires_at_s}: rotate keys"
            )

    def _check_from_other_side(self, message: _PointBatch) -> None:
        if message.session_id != self.session_id:
            raise PsiSessionMismatchError(
                f"message of session {message.session_id.hex()} sent to session {self.session_id.hex()}"
            )
        if message.sender == self.role:
            raise PsiSessionMismatchError(f"{self.role.name} received a message it sent itself")

    def _random_order(self, ids: list[str]) -> list[str]:
        """A uniformly random permutation: the other side learns which of its own ids sit at
        the positions that match, so the order must say nothing about the ids elsewhere.
        Sorting by 64-bit keys from the CSPRNG does in C what a Python shuffle does in ~1 s
        per million ids; a tie (probability ~3e-8 at a million ids) only fixes two ids' order."""
        sort_keys = np.frombuffer(self._random_bytes(8 * len(ids)), dtype=np.uint64)
        return [ids[position] for position in np.argsort(sort_keys, kind="stable").tolist()]

    @staticmethod
    def _split(items: list[bytes]) -> list[list[bytes]]:
        return [items[start : start + CHUNK_IDS] for start in range(0, len(items), CHUNK_IDS)]

    def _map(self, function: Callable[[_T], bytes], tasks: list[_T], id_count: int) -> list[bytes]:
        if id_count < self._parallel_min_ids or (self._processes == 1 and self._executor is None):
            return [function(task) for task in tasks]
        if self._executor is not None:
            return list(self._executor.map(function, tasks))
        # fork, not spawn: a forked worker inherits the loaded libsodium, whereas a spawned
        # one would import rbcl again and unpack its 2.8 MB library to disk once more.
        context = multiprocessing.get_context("fork") if os.name == "posix" else None
        with concurrent.futures.ProcessPoolExecutor(self._processes, mp_context=context) as pool:
            return list(pool.map(function, tasks))

