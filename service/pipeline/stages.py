"""The names of the pipeline's stages, in one place: the job record's ``stage``, the QA report's and the job's
``stage_times_s`` keys, the ``/metrics`` histogram labels and the benchmark tables all use these.

``PROGRESS_AT`` is the share of a job done when each stage starts (the job record's ``progress``).
"""

from __future__ import annotations

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
    RTSTRUCT = "rtstruct"
    PREVIEW = "preview"
    DONE = "done"


# the stages that are timed (``stage_times_s``), in the order they run
TIMED_STAGES: tuple[Stage, ...] = (
    Stage.LOAD_MODEL,
    Stage.READ,
    Stage.READ_REFERENCE,
    Stage.PREPROCESS,
    Stage.MODEL,
    Stage.RESAMPLE_BACK,
    Stage.POSTPROCESS,
    Stage.RTSTRUCT,
    Stage.PREVIEW,
)

PROGRESS_AT: dict[Stage, float] = {
    Stage.STARTING: 0.0,
    Stage.LOAD_MODEL: 0.0,
    Stage.READ: 0.05,
    Stage.READ_REFERENCE: 0.1,
    Stage.PREPROCESS: 0.15,
    Stage.MODEL: 0.2,
    Stage.RESAMPLE_BACK: 0.75,
    Stage.POSTPROCESS: 0.8,
    Stage.RTSTRUCT: 0.85,
    Stage.PREVIEW: 0.92,
    Stage.DONE: 1.0,
}
