"""Commissioning: evaluate a bundle on a clinic's own patients and write a report (``parotid-seg evaluate``)."""
