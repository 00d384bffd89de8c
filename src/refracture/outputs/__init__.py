"""Where the scores go after ``refracture score``: DICOM SR + SEG for the PACS, FHIR
RiskAssessments for the electronic record, one-page risk cards for the clinic, and the
``refracture calculator`` web page.

:func:`write_outputs` writes the first three for a scoring run (one bad patient never stops
the others); :mod:`refracture.outputs.calculator` serves the registered model in a browser.
"""

from refracture.outputs.run import KINDS, OutputOptions, OutputsResult, check_options, write_outputs

__all__ = ["KINDS", "OutputOptions", "OutputsResult", "check_options", "write_outputs"]
