"""Which series of an exam holds which map: the vendor rules, in one table.

Each rule names the vendor it applies to, what it looks at (the ImageType/FrameType values and
the SeriesDescription), the role it gives (``pdff``, ``r2star``, ``t2star``, or a series that
is recognised but not used, such as an IDEAL-IQ water image), and where the pattern comes
from. Rules are tried in table order and the first match wins; vendor rules come before the
generic ones. Before any rule, a series is set aside when it cannot be a map: not MR, several
echoes at each position (the multi-echo source images the maps are computed from), several
volumes at each position (4-D), or a single slice.

The sources are vendor documents and public samples. Where a pattern is the vendor's naming
habit rather than a documented attribute (GE's series description prefixes, Canon's
descriptions) the rule says so; such series are listed in ``index.csv`` with the rule that
matched, so a site can check them before training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["MAP_ROLES", "RULES", "Classified", "Rule", "StackFacts", "classify"]

#: Roles that fill a manifest column, and the unit a rule implies for it (None: the series
#: must state it, or it is decided from the values per site).
MAP_ROLES: dict[str, tuple[str, str | None]] = {
    "pdff": ("pdff", None),
    "r2star": ("r2star", "per_s"),
    "t2star": ("r2star", "t2star_ms"),
}


@dataclass(frozen=True)
class StackFacts:
    """What the rules look at, for one stack (one image type of one series)."""

    vendor: str  # one name per company (refracture.imaging.metadata.canonical_vendor)
    description: str
    image_type: tuple[str, ...]
    modality: str = "MR"
    n_echoes: int = 1
    n_volumes: int = 1
    n_positions: int = 2


@dataclass(frozen=True)
class Rule:
    """One vendor pattern: all of ``image_type`` tokens present (if any), ``description``
    matching (if given; a case-insensitive regular expression)."""

    name: str
    vendor: str | None  # None: every vendor
    role: str
    source: str
    image_type: frozenset[str] = field(default_factory=frozenset)
    description: str | None = None

    def matches(self, facts: StackFacts) -> bool:
        if self.vendor is not None and facts.vendor != self.vendor:
            return False
        if self.image_type and not self.image_type <= set(facts.image_type):
            return False
        if self.description is not None:
            return re.search(self.description, facts.description, re.IGNORECASE) is not None
        return bool(self.image_type)


@dataclass(frozen=True)
class Classified:
    """A stack's role ('' for none), the rule that gave it, and why when there is no role."""

    role: str
    rule: str
    reason: str = ""


_GE = (
    "GE Healthcare IDEAL IQ (SIGNA application guide): six series per acquisition - water, "
    "fat, in-phase, out-of-phase, fat fraction and R2* - named by a prefix of the series "
    "description, e.g. 'FatFrac: Sag IDEAL-IQ', 'R2*: Sag IDEAL-IQ' (GE naming habit)"
)
_SIEMENS = (
    "Siemens Healthineers LiverLab / q-Dixon (syngo MR application guide): fat fraction, R2* "
    "or T2*, water and fat maps, as separate series whose ImageType carries DIXON and the map "
    "(FAT_FRACTION, R2_STAR, T2_STAR, WATER, FAT) and whose description ends in the map's name"
)
_PHILIPS = (
    "Philips mDIXON Quant: one series holding water, fat, fat fraction and T2* images, told "
    "apart by ImageType (W, F, FF, T2_STAR); as read by the public MATLAB converter "
    "dcm2nii_mDIXON.m ('\\FF\\FF\\', '\\T2_STAR')"
)
_CANON = (
    "Canon Medical (Vantage): quantitative Dixon maps carry no dedicated ImageType value; "
    "matched by the series description the protocol gives them (FF, fat fraction, R2*, T2*)"
)
_GENERIC = "any vendor: a series description naming the map (PDFF, fat fraction, R2*, T2* map)"

_FF = r"(?<![A-Z0-9])(FF|PDFF|FAT[ _-]?FRAC(TION)?|FATFRAC)(?![A-Z0-9])"
_R2 = r"R2\s*\*|R2[ _-]?STAR"
_T2 = r"T2\s*\*|T2[ _-]?STAR"
# A T2* map, not a T2*-weighted image: the description says map (or the vendor's image type
# does, in the rules above).
_T2_MAP = rf"({_T2}).*MAP|MAP.*({_T2})"

#: The rules, tried in order; the first that matches gives the role.
RULES: tuple[Rule, ...] = (
    # GE IDEAL IQ: the description prefix names the series.
    Rule("GE IDEAL IQ fat fraction", "GE", "pdff", _GE, description=r"^\s*FAT\s*FRAC"),
    Rule("GE IDEAL IQ R2*", "GE", "r2star", _GE, description=r"^\s*R2\s*\*"),
    Rule("GE IDEAL IQ water", "GE", "water", _GE, description=r"^\s*WATER\s*:"),
    Rule("GE IDEAL IQ fat", "GE", "fat", _GE, description=r"^\s*FAT\s*:"),
    Rule("GE IDEAL IQ in-phase", "GE", "in_phase", _GE, description=r"^\s*IN\s*PHASE\s*:"),
    Rule(
        "GE IDEAL IQ out-of-phase", "GE", "out_phase", _GE, description=r"^\s*OUT\s*PHASE\s*:"
    ),  # fmt: skip
    # Siemens q-Dixon / LiverLab: ImageType first, then the description's map name.
    Rule(
        "Siemens Dixon fat fraction",
        "Siemens",
        "pdff",
        _SIEMENS,
        image_type=frozenset({"DIXON", "FAT_FRACTION"}),
    ),  # fmt: skip
    Rule(
        "Siemens Dixon R2*",
        "Siemens",
        "r2star",
        _SIEMENS,
        image_type=frozenset({"DIXON", "R2_STAR"}),
    ),  # fmt: skip
    Rule(
        "Siemens Dixon T2*",
        "Siemens",
        "t2star",
        _SIEMENS,
        image_type=frozenset({"DIXON", "T2_STAR"}),
    ),  # fmt: skip
    Rule(
        "Siemens Dixon water",
        "Siemens",
        "water",
        _SIEMENS,
        image_type=frozenset({"DIXON", "WATER"}),
    ),  # fmt: skip
    Rule("Siemens Dixon fat", "Siemens", "fat", _SIEMENS, image_type=frozenset({"DIXON", "FAT"})),
    Rule(
        "Siemens q-Dixon fat fraction (description)", "Siemens", "pdff", _SIEMENS, description=_FF
    ),  # fmt: skip
    Rule("Siemens q-Dixon R2* (description)", "Siemens", "r2star", _SIEMENS, description=_R2),
    Rule("Siemens q-Dixon T2* (description)", "Siemens", "t2star", _SIEMENS, description=_T2),
    # Philips mDIXON Quant: the image type inside the one series.
    Rule(
        "Philips mDIXON Quant fat fraction",
        "Philips",
        "pdff",
        _PHILIPS,
        image_type=frozenset({"FF"}),
    ),  # fmt: skip
    Rule(
        "Philips mDIXON Quant T2*", "Philips", "t2star", _PHILIPS, image_type=frozenset({"T2_STAR"})
    ),  # fmt: skip
    Rule(
        "Philips mDIXON Quant R2*", "Philips", "r2star", _PHILIPS, image_type=frozenset({"R2_STAR"})
    ),  # fmt: skip
    Rule("Philips mDIXON Quant water", "Philips", "water", _PHILIPS, image_type=frozenset({"W"})),
    Rule("Philips mDIXON Quant fat", "Philips", "fat", _PHILIPS, image_type=frozenset({"F"})),
    # Canon: descriptions only.
    Rule("Canon fat fraction (description)", "Canon", "pdff", _CANON, description=_FF),
    Rule("Canon R2* (description)", "Canon", "r2star", _CANON, description=_R2),
    Rule("Canon T2* (description)", "Canon", "t2star", _CANON, description=_T2_MAP),
    # Any vendor.
    Rule("fat fraction (description)", None, "pdff", _GENERIC, description=_FF),
    Rule("R2* (description)", None, "r2star", _GENERIC, description=_R2),
    Rule("T2* map (description)", None, "t2star", _GENERIC, description=_T2_MAP),
)


def classify(facts: StackFacts) -> Classified:
    """The role of a stack by the first matching rule, or why it has none."""
    if facts.modality.upper() != "MR":
        return Classified("", "", f"modality {facts.modality or 'unknown'}, not MR")
    if facts.n_echoes > 1:
        return Classified(
            "source",
            "",
            f"multi-echo source images ({facts.n_echoes} echoes at each position): the maps "
            "are the fat fraction and R2*/T2* series computed from them",
        )
    if facts.n_volumes > 1:
        return Classified("", "", f"4-D series ({facts.n_volumes} volumes at each position)")
    if facts.n_positions < 2:
        return Classified("", "", "a single slice (localizer or 2-D image)")
    for rule in RULES:
        if rule.matches(facts):
            reason = "" if rule.role in MAP_ROLES else f"{rule.name.split(' (')[0]}: not a map"
            return Classified(rule.role, rule.name, reason)
    return Classified("", "", "no rule recognises it as a fat fraction or R2*/T2* map")
