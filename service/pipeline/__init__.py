"""Pure pipeline stages: no web, queue or DICOM-network imports in this package."""
