"""DICOM listener: a pynetdicom Storage SCP (CT Image Storage + Verification) that turns received series into jobs
and sends the resulting RTSTRUCT back by C-STORE.

Modules, one job each:

- ``settings``: ``ListenerSettings`` (pydantic-settings, env prefix ``PAROTID_LISTENER_``, optional TOML file).
- ``spool``: atomic instance writes, per-series folders, free-disk watermark, clean-up.
- ``tracker``: series completeness (quiet time, association release, aborts), with an injectable clock.
- ``scp``: the pynetdicom application entity and its event handlers (status codes in one place).
- ``jobs``: the adapter to the service's job store and dispatcher.
- ``delivery``: the return path (C-ECHO check, C-STORE, exponential backoff, dead letters).
- ``audit``: the association and job log (JSON lines, never patient names or IDs).
- ``listener``: ``Listener`` wires them together and runs the background loop.
- ``app_cli``: ``parotid-seg listen``.
"""
