"""The console as a service: a real process under uvicorn on the real broker, reading the customer
topics into its view, answering over real HTTP, forgetting an erased customer, dead-lettering a
malformed message, and writing no personal number in clear to its log."""
from __future__ import annotations

import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine

from services.console.accounts import Accounts, current_code
from services.console.audit import AuditLog, AuditQuery
from services.core.avro import AvroCodec
from services.core.clients import consume, produce
from services.core.config import Settings
from services.core.dead_letter import DeadLetter
from services.core.supervisor import ServiceRunner
from services.core.waiting import wait_until
from services.protocol.stream_messages import (
    CustomerIdentity,
    CustomerProfile,
    CustomerScores,
    Offer,
    OfferResponse,
    ProductScore,
)
from tests.console.conftest import NATIONAL_ID, PASSWORD, PHONE, Seen


async def test_the_console_service_keeps_customers_from_the_topics_and_forgets_an_erased_one(
    settings: Settings, topics: list[str], tmp_path: Path, codec: AvroCodec, personal_numbers_stay_masked: Seen,
) -> None:
    settings = settings.model_copy(update={"console_cookie_secure": False})
    engine = create_engine(settings.database_url.get_secret_value())
    accounts = Accounts(engine, settings)
    accounts.create_user("mia.marketer", PASSWORD, {"marketer": None}, created_by="test", must_change_password=False)
    secret = accounts.offer_totp("mia.marketer")
    accounts.finish_setup("mia.marketer", greeting="Blue heron", code=current_code(secret), new_password=None)
    runner = ServiceRunner(settings, tmp_path / "logs")
    seen = personal_numbers_stay_masked
    try:
        runner.start("console")
        now_ms = int(time.time() * 1000)
        customer = "C0000042"
        bootstrap = settings.kafka_bootstrap_servers
        await produce(bootstrap, settings.topic("customer.profiles"), [(customer.encode(), codec.encode(CustomerProfile(
            customer, 37, 24, 1_800_000, 5_000_000, ("debit_card",), "young_professional", "push", "Asia/Shanghai",
            True, now_ms)))])
        await produce(bootstrap, settings.topic("customer.identities"),
                      [(customer.encode(), codec.encode(CustomerIdentity(customer, NATIONAL_ID, now_ms)))])
        await produce(bootstrap, settings.topic("scores"), [
            (customer.encode(), codec.encode(CustomerScores(
                "e1", customer, "salary_credit", now_ms, now_ms, "young_professional", "push", "Asia/Shanghai", 37,
                ("debit_card",), True, (ProductScore("credit_card", 0.42, "propensity.credit_card@v1", "CS-1", False, ()),)))),
            (customer.encode(), b"\x00not avro"),
        ])
        offer = Offer("o1", customer, "payday", "credit_card", "push", f"Questions? Call {PHONE}", 0.42, 0.4,
                      "propensity.credit_card@v1", "CS-1", (), "e1", "salary_credit", "young_professional", "2024-06-01",
                      now_ms, now_ms)
        await produce(bootstrap, settings.topic("offers.push"), [(customer.encode(), codec.encode(offer))])
        await produce(bootstrap, settings.topic("responses"), [(customer.encode(), codec.encode(OfferResponse(
            "r1", "o1", "e1", customer, "payday", "credit_card", "push", "converted", now_ms)))])

        with httpx.Client(base_url=f"http://127.0.0.1:{runner.ports['console']}", headers={"user-agent": "feed-test"}) as http:
            def call(method: str, path: str, **kwargs: object) -> httpx.Response:
                if method != "GET":
                    kwargs["headers"] = {"X-CSRF-Token": http.cookies.get("cs_csrf") or http.get("/api/csrf").json()["csrf_token"]}
                response = http.request(method, path, **kwargs)  # type: ignore[arg-type]
                seen.texts.append((f"{method} {path}", response.text))
                return response

            assert call("POST", "/api/session", json={"username": "mia.marketer", "password": PASSWORD}).status_code == 202
            # The code of the next time step: the one of this step was used when the authenticator was enrolled.
            assert call("POST", "/api/session/verify", json={"code": current_code(secret, time.time() + 30)}).status_code == 200

            def complete() -> dict[str, object] | None:
                answer = call("GET", f"/api/customers/{customer}")
                record = answer.json() if answer.status_code == 200 else None
                return record if record and record["offers"] and record["responses"] and record["scores"] else None

            record = await wait_until(complete, timeout_s=60, what="the console's view of the customer")
            assert record["national_id"] == "110***********002X"
            assert record["offers"][0]["message"] == "Questions? Call 138****5678"  # type: ignore[index]
            assert record["responses"][0]["outcome"] == "converted"  # type: ignore[index]
            dead = await consume(bootstrap, [settings.topic("dlq.scores")], until=lambda got: len(got) >= 1, timeout_s=30)
            letter = codec.decode(dead[0].value, DeadLetter)
            assert (letter.service, letter.topic) == ("console", "scores") and letter.reason

            await produce(bootstrap, settings.topic("customer.profiles"), [(customer.encode(), None)])
            await wait_until(lambda: call("GET", f"/api/customers/{customer}").status_code == 404, timeout_s=60,
                             what="the erased customer gone from the console")
            assert call("GET", "/readyz").status_code == 200
            metrics = call("GET", "/metrics").text
            assert 'cipherstream_events_in_total{service="console",topic="customer.profiles"} 2.0' in metrics
        erased = AuditLog(engine).search(AuditQuery(action="customer.erased"))
        assert [(e.actor, e.customer_id) for e in erased] == [("system:feed", customer)]
    finally:
        runner.stop_all()
        engine.dispose()
    log_text = (tmp_path / "logs" / "console.log").read_text()
    # uvicorn's access log goes through the JSON logs (which mask every run of seven digits, customer ids too).
    assert '"GET /api/customers/C******* HTTP/1.1\\" 200' in log_text
    seen.texts.append(("console log", log_text))
