"""Running jobs: ``runner.run_job`` (shared), the embedded pool and the Celery app, and ``dispatcher.make_dispatcher``,
which chooses between them (the interface they implement is ``service.jobs.dispatch.Dispatcher``)."""
