"""The scan run after every attack test finds what it must: an unmasked number in a body or a log
line, and lets through only the one national id a reveal answers with."""
from __future__ import annotations

import logging

from tests.security.console_server import RunningConsole
from tests.security.test_attacks import CUSTOMER, NATIONAL_ID, feed_customer


def test_the_scan_finds_an_unmasked_number_in_a_body_or_a_log_line(console: RunningConsole) -> None:
    feed_customer(console)
    start = len(console.recorder.written)
    console.recorder.add("GET /api/planted -> 200", '{"phone": "13812345678"}')
    logging.getLogger("services.console.planted").warning("card %s", "6222 0212 3456 7890")
    console.recorder.add(f"POST /api/customers/{CUSTOMER}/reveal -> 200", f'{{"national_id": "{NATIONAL_ID}", "x": "13987654321"}}')
    leaks = console.unmasked_since(start)
    assert leaks == [("GET /api/planted -> 200", ["13812345678"]),
                     (f"POST /api/customers/{CUSTOMER}/reveal -> 200", ["13987654321"])]
    # The log line was masked on its way out, as the service's own handler masks it.
    assert any(item.where == "log services.console.planted" and "622*********7890" in item.text
               for item in console.recorder.since(start))
    del console.recorder.written[start:]  # the planted lines are not the console's: the after-test scan must not see them
