"""IngestPipeline: verification of the next batch overlaps the commit of the previous one,
yet every answer follows its own durable commit, in order; failures stop it loudly."""

from __future__ import annotations

import pytest
from sqlalchemy import func
from sqlmodel import select

from hospital_server.ingest.pipeline import IngestPipeline, PipelineStopped
from hospital_server.models import IngestedEnvelope
from phd_protocol.wire import AckStatus, EnvelopeResult
from tests.server.ingest_world import World, bp

GW = "gw-1"


def _stored(world: World) -> int:
    with world.ctx.sessions() as s:
        return int(s.exec(select(func.count()).select_from(IngestedEnvelope)).one())


def test_answers_follow_their_commit_in_submission_order(world: World) -> None:
    device = world.enroll(mrn="P-1")
    batches = [
        [world.seal(device, [bp(device, str(100 + 3 * i + j))]) for j in range(3)] for i in range(4)
    ]
    seen: list[tuple[int, list[EnvelopeResult], int]] = []

    def answer(token: int, results: list[EnvelopeResult]) -> None:
        # What a worker would ack now must already be readable by anyone else.
        seen.append((token, results, _stored(world)))

    pipeline: IngestPipeline[int] = IngestPipeline(world.ctx.sessions, world.ingestor, answer)
    for token, batch in enumerate(batches):
        pipeline.submit(token, GW, batch)
    pipeline.close()
    assert [token for token, _, _ in seen] == [0, 1, 2, 3]
    assert all(r.status is AckStatus.STORED for _, results, _ in seen for r in results)
    assert [count for _, _, count in seen] == [3, 6, 9, 12]


def test_a_batch_prepared_before_an_earlier_commit_sees_that_commit(world: World) -> None:
    device = world.enroll(mrn="P-2")
    envelope = world.seal(device)
    with world.ctx.sessions() as s:
        first = world.ingestor.prepare(s, GW, [envelope])
    with world.ctx.sessions() as s:
        again = world.ingestor.prepare(s, GW, [envelope])  # verified before the commit below
    with world.ctx.sessions() as s:
        assert world.ingestor.commit(s, first) == [EnvelopeResult.stored()]
    with world.ctx.sessions() as s:
        assert world.ingestor.commit(s, again) == [EnvelopeResult.duplicate()]
    assert _stored(world) == 1
    # Each batch's write is timed once, the second one's careful pass included.
    registry = world.ctx.metrics.registry
    assert registry.get_sample_value("phd_ingest_write_seconds_count") == 2
    assert (registry.get_sample_value("phd_ingest_write_seconds_sum") or 0) > 0


def test_a_failure_in_the_committer_stops_the_pipeline(world: World) -> None:
    device = world.enroll(mrn="P-3")

    def broken(_token: int, _results: list[EnvelopeResult]) -> None:
        raise RuntimeError("ack publisher broke")

    pipeline: IngestPipeline[int] = IngestPipeline(world.ctx.sessions, world.ingestor, broken)
    pipeline.submit(1, GW, [world.seal(device, [bp(device, "150")])])
    with pytest.raises(PipelineStopped) as info:
        pipeline.flush()
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(PipelineStopped):
        pipeline.submit(2, GW, [world.seal(device, [bp(device, "151")])])
    with pytest.raises(PipelineStopped):
        pipeline.close()
    assert _stored(world) == 1  # the first batch was committed before its answer failed
