"""Stage names and the stage timer (service/pipeline/stages.py)."""

from __future__ import annotations

import pytest

from service.pipeline.stages import PROGRESS_AT, TIMED_STAGES, Stage, StageTimer


def test_the_timer_reports_each_start_and_records_finished_stages_only():
    seen: list[tuple[str, float]] = []
    timer = StageTimer(lambda stage, fraction: seen.append((stage, fraction)), {"load_model": 1.5})
    with timer.stage(Stage.READ):
        pass
    with pytest.raises(ValueError), timer.stage(Stage.MODEL):
        raise ValueError("refused")
    assert seen == [("read", 0.0), ("model", 0.2)]
    assert set(timer.times) == {"load_model", "read"} and timer.times["read"] >= 0.0
    assert all(type(k) is str for k in timer.times)  # plain names in JSON, QA reports and metrics labels


def test_progress_grows_along_the_stages():
    shares = [PROGRESS_AT[s] for s in (Stage.STARTING, *TIMED_STAGES, Stage.DONE)]
    assert shares == sorted(shares) and shares[-1] == 1.0
