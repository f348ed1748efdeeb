"""The names of the pipeline's stages, in one place: the job record's ``stage``, the QA report's and the job's
``stage_times_s`` keys, the ``/metrics`` histogram labels and the benchmark tables all use these.

``PROGRESS_AT`` is the share of a job done when each stage starts (the job record's ``progress``);
``StageTimer`` reports each stage's start to a ``Progress`` callback and records its duration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum


class Stage(StrEnum):
    STARTING = "starting"  # the worker took the job; the pipeline has not started
    LOAD_MODEL = "load_model"
    READ = "read"
    READ_REFERENCE = "read_reference"
    PREPROCESS = "preprocess"
    MODEL = "model"
    RESAMPLE_BACK = "resample_back"
    POSTPROCESS = "postprocess"
    QA = "qa"  # the QA signals, quality estimate and verdict (service.pipeline.qa)
    RTSTRUCT = "rtstruct"
    PREVIEW = "preview"
    UNCERTAINTY = "uncertainty"  # the QA's uncertainty map written as NIfTI
    REVIEW_CACHE = "review_cache"  # the worker's copy of CT and masks for the review workstation (service.review)
    DONE = "done"


# the stages that are timed (``stage_times_s``), in the order they run
TIMED_STAGES: tuple[Stage, ...] = (
    Stage.READ,
    Stage.READ_REFERENCE,
    Stage.LOAD_MODEL,
    Stage.PREPROCESS,
    Stage.MODEL,
    Stage.RESAMPLE_BACK,
    Stage.POSTPROCESS,
    Stage.QA,
    Stage.RTSTRUCT,
    Stage.PREVIEW,
    Stage.UNCERTAINTY,
    Stage.REVIEW_CACHE,
)

PROGRESS_AT: dict[Stage, float] = {
    Stage.STARTING: 0.0,
    Stage.READ: 0.0,  # the input is checked before the model is loaded (a rejection answers at once)
    Stage.READ_REFERENCE: 0.05,
    Stage.LOAD_MODEL: 0.1,
    Stage.PREPROCESS: 0.15,
    Stage.MODEL: 0.2,
    Stage.RESAMPLE_BACK: 0.75,
    Stage.POSTPROCESS: 0.8,
    Stage.QA: 0.82,
    Stage.RTSTRUCT: 0.85,
    Stage.PREVIEW: 0.92,
    Stage.UNCERTAINTY: 0.95,
    Stage.REVIEW_CACHE: 0.97,
    Stage.DONE: 1.0,
}

Progress = Callable[[str, float], None]  # (stage name, fraction of the job done)


class StageTimer:
    """``with timer.stage(Stage.MODEL): probs = predict(...)``: reports the start, records the duration in seconds
    (rounded to ms) in ``times`` when the block ends without an error. A context manager rather than a
    ``run(fn, *args)`` wrapper so that type checkers see every stage's inputs and outputs."""

    def __init__(self, progress: Progress | None = None, times: dict[str, float] | None = None) -> None:
        self.progress = progress
        self.times: dict[str, float] = dict(times or {})

    @contextmanager
    def stage(self, stage: Stage) -> Iterator[None]:
        if self.progress is not None:
            self.progress(stage.value, PROGRESS_AT[stage])
        t0 = time.perf_counter()
        yield
        self.times[stage.value] = round(time.perf_counter() - t0, 3)
