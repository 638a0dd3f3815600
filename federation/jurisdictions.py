"""Jurisdiction codes: ISO 3166-1 alpha-2 country codes, plus ``EU``.

A site sits in one jurisdiction; a data item may be allowed in several. ``EU``
as an *allowed* jurisdiction admits every member state of the European Union
(and a site registered with jurisdiction ``EU`` itself, such as an EU agency).
"""

from __future__ import annotations

from collections.abc import Iterable

ISO_3166_ALPHA2: frozenset[str] = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
    DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS
    GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
    KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
    MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
    PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
    SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
    VN VU WF WS YE YT ZA ZM ZW
    """.split()
)

EU_MEMBERS: frozenset[str] = frozenset(
    """
    AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE
    """.split()
)

REGIONS: frozenset[str] = frozenset({"EU"})

VALID_JURISDICTIONS: frozenset[str] = ISO_3166_ALPHA2 | REGIONS


def check_jurisdiction(code: str) -> str:
    """Return ``code`` upper-cased if it is a known jurisdiction, else raise ``ValueError``."""
    upper = code.strip().upper()
    if upper not in VALID_JURISDICTIONS:
        raise ValueError(
            f"{code!r} is not an ISO 3166-1 alpha-2 country code (like FR, DE, US) nor EU"
        )
    return upper


def jurisdiction_allows(allowed: Iterable[str] | None, jurisdiction: str) -> bool:
    """True when a site in ``jurisdiction`` may hold data restricted to ``allowed``.

    ``None`` means unrestricted. ``EU`` in ``allowed`` admits every EU member state.
    """
    if allowed is None:
        return True
    allowed_set = set(allowed)
    if jurisdiction in allowed_set:
        return True
    return "EU" in allowed_set and jurisdiction in EU_MEMBERS


def intersect_jurisdictions(
    a: Iterable[str] | None, b: Iterable[str] | None
) -> tuple[str, ...] | None:
    """The jurisdictions both ``a`` and ``b`` allow (``None``: unrestricted; ``EU`` stands for
    its member states, and comes back as ``EU`` when every member is allowed)."""
    if a is None:
        return None if b is None else tuple(sorted(set(b)))
    if b is None:
        return tuple(sorted(set(a)))

    def expand(codes: Iterable[str]) -> set[str]:
        out = set(codes)
        return out | EU_MEMBERS if "EU" in out else out

    both = expand(a) & expand(b)
    if both >= EU_MEMBERS:
        both = (both - EU_MEMBERS) | {"EU"}
    else:
        both.discard("EU")
    return tuple(sorted(both))
