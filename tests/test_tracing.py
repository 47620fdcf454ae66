"""OpenTelemetry spans: a cold registration and each job, when the application has set up
the SDK; nothing to set up otherwise (the API's default tracer records nothing).

The SDK's tracer provider is global to a process and can be set once: this module sets it
for the rest of the test session, exporting into memory, and clears what it recorded.
"""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from support import halves, write


@pytest.fixture(scope="module")
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    exporter.clear()


def test_a_cold_registration_and_its_job_are_spans_and_a_warm_one_is_none(spans, make_site):
    site = make_site()
    write(site.media, "photo.png", halves(80, 40))
    spans.clear()
    representation = site.registrar.register("photo.png | fit 40x")
    assert [span.name for span in spans.get_finished_spans()] == ["fileproc.register"]

    site.registrar.register("photo.png | fit 40x")  # warm: a lookup, no span
    assert len(spans.get_finished_spans()) == 1

    assert site.get(representation.url).status_int == 301
    (job,) = [span for span in spans.get_finished_spans() if span.name == "fileproc.job"]
    assert job.attributes["checksum"] == representation.checksum
    assert job.attributes["source"] == "photo.png"
    assert job.status.is_ok


def test_a_refused_job_is_a_span_with_its_error(spans, make_site):
    site = make_site()
    write(site.media, "whole.png", halves(400, 200))
    whole = (site.media / "whole.png").read_bytes()
    (site.media / "broken.png").write_bytes(whole[: len(whole) // 2])  # its header, half its pixels
    spans.clear()
    representation = site.registrar.register("broken.png | fit 40x | format png")
    assert site.get(representation.url).status_int == 422
    (job,) = [span for span in spans.get_finished_spans() if span.name == "fileproc.job"]
    assert not job.status.is_ok, "the span records that the job did not make its result"
