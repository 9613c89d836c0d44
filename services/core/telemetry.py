"""OpenTelemetry set-up and W3C trace context carried in Kafka headers.

The exporter follows the standard OTEL_* variables: with OTEL_EXPORTER_OTLP_ENDPOINT set, spans
go to that collector over OTLP/HTTP; otherwise they are created (so trace ids reach the logs and
the next hop) but not exported. `CIPHERSTREAM_TRACE_FILE` appends every span as one JSON line
to a file (the SDK's console exporter pointed at a file): for local runs and the tracing test.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

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
