"""Write a synthetic radiograph as a valid, de-identified DICOM Part-10 file (CR or DX)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from isnetflow import __version__

__all__ = ["SOP_CLASS", "DicomMeta", "write_dicom"]

SOP_CLASS = {
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
}


@dataclass(frozen=True)
class DicomMeta:
    """The header values :func:`write_dicom` writes (UIDs, identifiers, acquisition, pixel encoding)."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    institution: str
    modality: str
    view_position: str
    photometric: str
    bits_stored: int
    pixel_spacing_mm: float
    study_date: str
    window_center: float
    window_width: float
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    burned_in: bool = True
    patient_sex: str = "O"
    patient_age: str = ""


def write_dicom(path: Path, pixels: np.ndarray, m: DicomMeta) -> None:
    """Write ``pixels`` (uint8 for 8-bit, uint16 otherwise) with the header described by ``m``."""
    bits_allocated = 8 if m.bits_stored == 8 else 16
    want = np.uint8 if bits_allocated == 8 else np.uint16
    if pixels.dtype != want:
        raise TypeError(f"{path}: pixels must be {np.dtype(want)} for BitsStored={m.bits_stored}")
    if int(pixels.max(initial=0)) >= 2**m.bits_stored:
        raise ValueError(f"{path}: pixel values exceed BitsStored={m.bits_stored}")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SOP_CLASS[m.modality])
    meta.MediaStorageSOPInstanceUID = UID(m.sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "ISNETFLOW"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SOP_CLASS[m.modality]
    ds.SOPInstanceUID = m.sop_instance_uid
    ds.StudyInstanceUID = m.study_instance_uid
    ds.SeriesInstanceUID = m.series_instance_uid
    ds.Modality = m.modality
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.StudyDate = m.study_date
    ds.ContentDate = m.study_date
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.AccessionNumber = ""
    ds.Manufacturer = "isnetflow synthetic"
    ds.ManufacturerModelName = f"isnetflow-synth {__version__}"
    ds.InstitutionName = m.institution
    ds.ReferringPhysicianName = ""
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = m.view_position
    ds.PatientOrientation = ["L", "F"] if m.view_position == "AP" else ["R", "F"]
    # De-identified (PS3.15 basic profile): identifiers are pseudonyms, PHI attributes empty.
    ds.PatientName = ""
    ds.PatientID = m.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = m.patient_sex
    ds.PatientAge = m.patient_age
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "isnetflow synthetic phantom: no real patient"
    ds.BurnedInAnnotation = "YES" if m.burned_in else "NO"

    rows, cols = pixels.shape
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = m.photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = m.bits_stored
    ds.HighBit = m.bits_stored - 1
    ds.PixelRepresentation = 0
    spacing = f"{m.pixel_spacing_mm:.4f}"
    ds.PixelSpacing = [spacing, spacing]
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.RescaleSlope = f"{m.rescale_slope:g}"
    ds.RescaleIntercept = f"{m.rescale_intercept:g}"
    ds.RescaleType = "US"
    ds.WindowCenter = f"{m.window_center:.1f}"
    ds.WindowWidth = f"{max(m.window_width, 1.0):.1f}"
    ds.PresentationLUTShape = "INVERSE" if m.photometric == "MONOCHROME1" else "IDENTITY"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()

    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
