"""PSI benchmark: both parties in one run, 1,000,000 ids each, half in common (--quick: 50,000).

End to end means every step of services/crypto/psi's exchange, timed from raw ids to both
parties' alignments: each side blinds its ids, re-blinds the other's, takes the answer to its
own, and intersects. The two parties run at the same time (one thread each, as they would on
their own machines) and share one process pool over this machine's cores for the curve work.
Message serialisation (the Avro codec's encode and decode of each message, as a Kafka hop would
do) is included; the network is not.

The work is fixed: per id pair two hashes to the group and four scalar multiplications
(libsodium's ristretto255). `cpu_s` in the notes is the CPU time all processes spent, so a run
on a busy shared machine can be told from a slow implementation: wall time on two idle
cores would be about cpu_s / 2.

Run from the repository root: `.venv/bin/python -m bench.psi [--quick]`.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import resource
import time
from typing import Any

from bench.common import parse_args, write_results
from services.core.avro import AvroCodec, SchemaStore
from services.core.config import REPO_ROOT
from services.crypto.psi import PsiAlignment, PsiParty, PsiPartyKey, PsiRole, PsiSessionParams, wire

FULL_IDS_PER_SIDE = 1_000_000
QUICK_IDS_PER_SIDE = 50_000


def cpu_s() -> float:
    """User and system time of this process and of its children that have ended."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def both(
    threads: concurrent.futures.ThreadPoolExecutor, bank_step: Any, partner_step: Any, *args: Any
) -> tuple[Any, Any]:
    """Run the bank's and the partner's step at once, as the two parties would."""
    bank_future = threads.submit(bank_step, *args[: len(args) // 2])
    partner_future = threads.submit(partner_step, *args[len(args) // 2 :])
    return bank_future.result(), partner_future.result()


def run(ids_per_side: int, pool: concurrent.futures.Executor) -> tuple[PsiAlignment, PsiAlignment, dict[str, Any]]:
    common = ids_per_side // 2
    bank_ids = [f"cust-{number:010d}" for number in range(ids_per_side)]
    partner_ids = [f"cust-{number:010d}" for number in range(ids_per_side - common, 2 * ids_per_side - common)]
    codec = AvroCodec(SchemaStore(REPO_ROOT / "schemas"))
    params = PsiSessionParams.new()
    bank = PsiParty(PsiPartyKey.generate(PsiRole.BANK, params), executor=pool)
    partner = PsiParty(PsiPartyKey.generate(PsiRole.PARTNER, params), executor=pool)
    step_s: dict[str, float] = {}
    threads = concurrent.futures.ThreadPoolExecutor(2)

    start_s = mark_s = time.perf_counter()
    bank_blinded, partner_blinded = both(
        threads,
        lambda ids: wire.encode(codec, bank.blind(ids)),
        lambda ids: wire.encode(codec, partner.blind(ids)),
        bank_ids,
        partner_ids,
    )
    step_s["blind_s"], mark_s = round(time.perf_counter() - mark_s, 2), time.perf_counter()
    answer_to_partner, answer_to_bank = both(
        threads,
        lambda encoded: wire.encode(codec, bank.reblind(wire.decode_blinded(codec, encoded))),
        lambda encoded: wire.encode(codec, partner.reblind(wire.decode_blinded(codec, encoded))),
        partner_blinded,
        bank_blinded,
    )
    step_s["reblind_s"], mark_s = round(time.perf_counter() - mark_s, 2), time.perf_counter()

    def receive_and_intersect(party: PsiParty, encoded: bytes) -> PsiAlignment:
        party.receive(wire.decode_answer(codec, encoded))
        return party.intersect()

    bank_alignment, partner_alignment = both(
        threads,
        lambda encoded: receive_and_intersect(bank, encoded),
        lambda encoded: receive_and_intersect(partner, encoded),
        answer_to_bank,
        answer_to_partner,
    )
    end_s = time.perf_counter()
    step_s["receive_and_intersect_s"] = round(end_s - mark_s, 2)
    threads.shutdown()
    notes: dict[str, Any] = {
        "ids_per_side": ids_per_side,
        "intersection_size": common,
        "elapsed_s": round(end_s - start_s, 2),
        "steps_s": step_s,
        "wire_bytes_per_side": len(bank_blinded) + len(answer_to_partner),
    }
    if bank_alignment.intersection_size != common or sorted(bank_alignment.join_ids.items()) != sorted(
        partner_alignment.join_ids.items()
    ):
        raise SystemExit("PSI benchmark produced a wrong intersection")
    return bank_alignment, partner_alignment, notes


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "psi")
    ids_per_side = QUICK_IDS_PER_SIDE if args.quick else FULL_IDS_PER_SIDE
    cpu_start_s = cpu_s()
    # One pool for the whole run, forked before the id lists exist so forking stays cheap.
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("fork")) as pool:
        pool.submit(int).result()
        _, _, notes = run(ids_per_side, pool)
    notes["cpu_s"] = round(cpu_s() - cpu_start_s, 1)
    notes["processes"] = os.cpu_count()
    notes["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    metrics: dict[str, float | int] = {}
    if ids_per_side == FULL_IDS_PER_SIDE:
        metrics["psi_1m_s"] = notes["elapsed_s"]
    metrics["psi_ids_per_s"] = round(2 * ids_per_side / notes["elapsed_s"])
    write_results("psi", metrics, notes)


if __name__ == "__main__":
    main()
