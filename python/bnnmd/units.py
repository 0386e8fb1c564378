"""The one table of units.

bnnmd stores, next to every dataset and exported model, the energy and length
unit its numbers are in. Conversions go through this table only, which is the C++ core's
(the LAMMPS plugin uses the same one).

Factors convert a value *in the named unit* to the base units eV and Angstrom.

Examples
--------
>>> round(energy_factor("kcal/mol", "eV"), 7)
0.0433641
>>> length_factor("nm", "A")
10.0
"""

from __future__ import annotations

from typing import Dict

from bnnmd import _core

# The table lives in the C++ core (cpp/evaluator/bnn_units.h: the values of ase.units, CODATA 2014,
# written out); tests/test_units.py compares it with ASE. Factors to eV and Angstrom.
ENERGY_UNITS: Dict[str, float] = dict(_core.units_table()["energy"])
LENGTH_UNITS: Dict[str, float] = dict(_core.units_table()["length"])

#: Units of each LAMMPS ``units`` style that bnnmd supports.
LAMMPS_UNITS: Dict[str, Dict[str, str]] = {
    "real": {"energy": "kcal/mol", "length": "A", "pressure": "atm"},
    "metal": {"energy": "eV", "length": "A", "pressure": "bar"},
}
#: LAMMPS' own ``nktv2p`` of each style (its force.cpp via update.cpp): the style's pressure unit per
#: energy unit / A^3; what LAMMPS multiplies a virial / volume by to print a pressure (and c_unc[6])
NKTV2P: Dict[str, float] = {"real": 68568.415, "metal": 1.6021765e6}


def lammps_pressure_factor(style: str, energy_unit: str, length_unit: str) -> float:
    """Multiply a pressure in ``energy_unit / length_unit^3`` by this to get it in the pressure unit
    of LAMMPS' ``units style`` (real: atm, metal: bar), with LAMMPS' constant.

    >>> round(lammps_pressure_factor("metal", "eV", "A"))
    1602176
    """
    u = LAMMPS_UNITS[style]
    return energy_factor(energy_unit, u["energy"]) / length_factor(length_unit, u["length"]) ** 3 * NKTV2P[style]


def _lookup(table: Dict[str, float], unit: str, kind: str) -> float:
    try:
        return table[unit]
    except KeyError:
        raise ValueError(
            f"unknown {kind} unit {unit!r}; supported {kind} units: {', '.join(table)}"
        ) from None


def energy_factor(from_unit: str, to_unit: str) -> float:
    """Multiply an energy in ``from_unit`` by this to get it in ``to_unit``."""
    return _lookup(ENERGY_UNITS, from_unit, "energy") / _lookup(ENERGY_UNITS, to_unit, "energy")


def length_factor(from_unit: str, to_unit: str) -> float:
    """Multiply a length in ``from_unit`` by this to get it in ``to_unit``."""
    return _lookup(LENGTH_UNITS, from_unit, "length") / _lookup(LENGTH_UNITS, to_unit, "length")


def check_energy_unit(unit: str) -> str:
    _lookup(ENERGY_UNITS, unit, "energy")
    return unit


def check_length_unit(unit: str) -> str:
    _lookup(LENGTH_UNITS, unit, "length")
    return unit


def force_factor(from_unit: str, to_unit: str) -> float:
    """Multiply a force in ``from_unit`` (``ENERGY/LENGTH``, e.g. ``kcal/mol/A``, ``eV/A``) by this to
    get it in ``to_unit``.

    >>> round(force_factor("eV/A", "kcal/mol/A"), 4)
    23.0605
    """
    (e0, l0), (e1, l1) = (split_force_unit(u) for u in (from_unit, to_unit))
    return energy_factor(e0, e1) / length_factor(l0, l1)


def split_force_unit(unit: str) -> "tuple[str, str]":
    """``"kcal/mol/A"`` -> ``("kcal/mol", "A")``: the energy and length units of a force unit."""
    energy, sep, length = unit.rpartition("/")
    if not sep:
        raise ValueError(f"force unit {unit!r} is not ENERGY/LENGTH; e.g. kcal/mol/A or eV/A")
    check_energy_unit(energy)
    check_length_unit(length)
    return energy, length
