"""The job layer: the filesystem job store (``store.JobStore``), the job record (``models``), submission checks
(``ingest``), stage-duration statistics (``stats``), the dispatcher interface (``dispatch``) and ``service.JobService``,
the Python API the HTTP layer and the DICOM listener use to submit and follow jobs. It never imports
``service.worker``: the composition roots pass a dispatcher in."""
