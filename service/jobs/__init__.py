"""The filesystem job store (``store.JobStore``), the job record (``models``), submission checks (``ingest``)
and stage-duration statistics (``stats``). Submitting and following jobs: ``service.worker.service.JobService``."""
