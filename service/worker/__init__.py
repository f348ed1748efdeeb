"""Running jobs: ``runner.run_job`` (shared), the embedded pool and the Celery app (``dispatcher``), and
``service.JobService``, the Python API the HTTP layer and the DICOM listener use to submit and follow jobs."""
