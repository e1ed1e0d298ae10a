"""Exposure logging: nothing waits on the database, nothing is lost silently, a clean stop
loses nothing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import REGISTRY

from app.db.engine import create_db_engine
from app.experiments.exposures import ExposureWriter, exposure
from app.services import Services
from tests.conftest import count_rows
from tests.experiments.conftest import MakeExperiment


def row(experiment_id: int, n: int) -> dict[str, object]:
    now = datetime.now(UTC)
    return exposure(
        experiment_id=experiment_id,
        recommendation_id=f"rec-{n}",
        variant="control",
        user_id=f"user-{n % 97}",
        model_version=None,
        items=["sku-1", "sku-2"],
        shown_at=now,
        attributable_until=now + timedelta(minutes=30),
    )


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("recsys_exposures_dropped_total", {"reason": reason}) or 0.0


def test_under_load_every_exposure_is_written_or_counted_as_dropped(
    services: Services, make_experiment: MakeExperiment
) -> None:
    """Eight threads record 40,000 exposures as fast as they can into a queue of 2,000: the
    recorders never block, some exposures are dropped, and written + dropped is exactly what was
    recorded, with the drops in the Prometheus counter and the rest in the table."""
    experiment = make_experiment()
    writer = ExposureWriter(services.engine, capacity=2000, batch_size=500, flush_seconds=0.05)
    writer.start()
    before = dropped("queue_full")
    accepted = [0] * 8

    def record(thread: int) -> None:
        for n in range(5000):
            accepted[thread] += writer.record(row(experiment.id, thread * 5000 + n))

    threads = [threading.Thread(target=record, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()

    assert writer.written == sum(accepted)
    assert writer.dropped > 0
    assert writer.written > 2000  # the writer drained the queue while it was filled
    assert writer.written + writer.dropped == 40_000
    assert dropped("queue_full") - before == writer.dropped
    assert count_rows(services, "experiment_exposures") == writer.written


def test_a_queue_large_enough_loses_nothing_and_writes_in_batches(
    services: Services, make_experiment: MakeExperiment
) -> None:
    experiment = make_experiment()
    writer = ExposureWriter(services.engine, capacity=50_000, batch_size=500, flush_seconds=0.05)
    writer.start()
    for n in range(20_000):
        assert writer.record(row(experiment.id, n))
    writer.close()
    assert writer.dropped == 0
    assert count_rows(services, "experiment_exposures") == 20_000
    assert writer.batches <= 20_000 // 500 * 2


def test_a_clean_stop_writes_what_is_queued(
    services: Services, make_experiment: MakeExperiment
) -> None:
    """Exposures queued just before the stop, with a long flush interval, are all stored."""
    experiment = make_experiment()
    writer = ExposureWriter(services.engine, capacity=1000, batch_size=100, flush_seconds=60)
    writer.start()
    for n in range(250):
        writer.record(row(experiment.id, n))
    writer.close()
    assert count_rows(services, "experiment_exposures") == 250


def test_flush_writes_the_batch_being_gathered(
    services: Services, make_experiment: MakeExperiment
) -> None:
    """flush() returns only once exposures recorded before it are stored, even those the writer
    thread already took and would otherwise hold for its flush interval."""
    experiment = make_experiment()
    writer = ExposureWriter(services.engine, capacity=1000, batch_size=100, flush_seconds=60)
    writer.start()
    try:
        for n in range(30):
            writer.record(row(experiment.id, n))
        writer.flush()
        assert count_rows(services, "experiment_exposures") == 30
    finally:
        writer.close()


def test_a_refused_batch_is_retried_then_counted(tmp_path: Path) -> None:
    """A database without the table refuses every batch: after the retries the exposures are
    counted as write_failed, and the writer goes on."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    writer = ExposureWriter(
        engine, capacity=100, batch_size=10, flush_seconds=0.01, retry_seconds=0
    )
    before = dropped("write_failed")
    for n in range(25):
        writer.record(row(1, n))
    writer.close()
    engine.dispose()
    assert writer.written == 0
    assert writer.dropped == 25
    assert dropped("write_failed") - before == 25
