"""A C-ECHO with pynetdicom (the DCMTK ``echoscu`` is ``tests.listener.conftest.echoscu``)."""

from __future__ import annotations

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]


def c_echo(port: int, calling_ae: str = "SCANNER", called_ae: str = "PAROTID_SEG", host: str = "127.0.0.1") -> bool:
    """True when an association is accepted and the C-ECHO answers Success (0x0000)."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        return False
    ok = assoc.send_c_echo().get("Status") == 0x0000
    assoc.release()
    return bool(ok)
