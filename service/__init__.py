from service.dicom_config import quiet_pydicom

quiet_pydicom()
