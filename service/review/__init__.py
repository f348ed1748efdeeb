"""The review workstation's back end: what the browser viewer reads (CT and masks as NIfTI, cached per job),
revisions of the result (corrected masks -> new RTSTRUCT), decisions (approve / reject) and the hold that keeps a
"review before send" listener peer's RTSTRUCT back until approval. Pure file operations on the job folder; the
HTTP routes (``service.api.routes_review``) and the listener are thin adapters on top."""
