"""Data: DICOM loading, the datasets' on-disk layouts, transforms and synthetic datasets."""
