"""DICOM as hospitals export it: image series (classic or enhanced multi-frame, any common
transfer syntax) and segmentations, read header-first; the vendor rules that tell which
series holds which map; and the index of a whole PACS export.

:mod:`.frames` (headers as frames), :mod:`.stacks` (one 3-D volume and its affine),
:mod:`.scaling` (stored to physical values, and the unit stated), :mod:`.series` (reading a
series), :mod:`.seg` (DICOM SEG label maps), :mod:`.rules` (vendor rules), :mod:`.index` and
:mod:`.exams` (``refracture index``).
"""
