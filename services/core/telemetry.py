"""OpenTelemetry set-up and W3C trace context carried in Kafka headers.

The exporter follows the standard OTEL_* variables: with OTEL_EXPORTER_OTLP_ENDPOINT set, spans
go to that collector over OTLP/HTTP; otherwise they are created (so trace ids reach the logs and
the next hop) but not exported. `CIPHERSTREAM_TRACE_FILE` appends every span as one JSON line
to a file (the SDK's console exporter pointed at a file): for local runs and the tracing test.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

KafkaHeaders = Sequence[tuple[str, bytes]]


def setup_tracing(service: str, processors: Iterable[SpanProcessor] = ()) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace_file = os.environ.get("CIPHERSTREAM_TRACE_FILE")
    if trace_file:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(
            out=open(trace_file, "a", encoding="utf-8"),  # noqa: SIM115 - lives as long as the process
            formatter=lambda span: span.to_json(indent=None) + "\n",
        ), schedule_delay_millis=200))
    for processor in processors:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def context_from_headers(headers: Mapping[str, bytes] | KafkaHeaders | None) -> otel_context.Context:
    """The trace context a producer put in the message headers (empty context when none)."""
    if not headers:
        return otel_context.Context()
    items = headers.items() if isinstance(headers, Mapping) else headers
    carrier = {key: value.decode("latin-1") for key, value in items if isinstance(value, bytes)}
    return propagate.extract(carrier)


def headers_from_context(context: otel_context.Context | None = None) -> list[tuple[str, bytes]]:
    """Kafka headers carrying the current (or given) trace context: `traceparent`, `tracestate`."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return [(key, value.encode("latin-1")) for key, value in carrier.items()]


TRACEPARENT = "traceparent"


def root_sample_ratio() -> float:
    """The share of new traces to record, from the standard OTEL_TRACES_SAMPLER(_ARG) variables.

    >>> import os; os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"; os.environ["OTEL_TRACES_SAMPLER_ARG"] = "0.25"
    >>> root_sample_ratio()
    0.25
    >>> del os.environ["OTEL_TRACES_SAMPLER"], os.environ["OTEL_TRACES_SAMPLER_ARG"]
    """
    sampler = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    if sampler.endswith("always_off"):
        return 0.0
    if sampler.endswith("traceidratio"):
        return min(1.0, max(0.0, float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))))
    return 1.0


@dataclass(frozen=True, slots=True)
class TraceDecision:
    """How one consumed message is traced.

    Recorded messages (sampled flag set) get real CONSUMER/PRODUCER spans. Unrecorded ones get
    no span at all: their `traceparent` is forwarded unchanged, so the trace id still follows the
    event and the hot path pays a header copy instead of two spans (about 30 us an event).
    """

    parent: otel_context.Context | None
    forwarded_headers: tuple[tuple[str, bytes], ...]

    @property
    def recorded(self) -> bool:
        return self.parent is not None


def decide_trace(headers: Sequence[tuple[str, bytes]] | None, ratio: float, random_bits: Callable[[int], int]) -> TraceDecision:
    """Follow the producer's sampling decision; sample a new trace at `ratio` when there is none.

    >>> decide_trace([("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-00")], 1.0, lambda n: 7).recorded
    False
    >>> decide_trace([], 1.0, lambda n: 7).recorded
    True
    >>> decide_trace([("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-03")], 0.0, lambda n: 7).recorded
    True
    """
    traceparent = next((value for key, value in headers or () if key == TRACEPARENT), None)
    if traceparent is not None:
        if _sampled(traceparent):
            return TraceDecision(context_from_headers(headers), ())
        return TraceDecision(None, ((TRACEPARENT, traceparent),))
    if ratio >= 1.0 or (ratio > 0.0 and random_bits(53) < ratio * (1 << 53)):
        return TraceDecision(otel_context.Context(), ())
    unsampled = f"00-{random_bits(128) or 1:032x}-{random_bits(64) or 1:016x}-00".encode()
    return TraceDecision(None, ((TRACEPARENT, unsampled),))


def _sampled(traceparent: bytes) -> bool:
    """Bit 0 of the W3C trace-flags is "sampled"; other bits (e.g. 0x02, random trace id) may be set."""
    try:
        return bool(int(traceparent.rsplit(b"-", 1)[1], 16) & 0x01)
    except (IndexError, ValueError):
        return False
