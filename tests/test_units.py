import ase.units
import pytest

from bnnmd import units


def test_table_matches_ase():
    for name, ev in [("kcal/mol", ase.units.kcal / ase.units.mol), ("kJ/mol", ase.units.kJ / ase.units.mol),
                     ("Hartree", ase.units.Hartree), ("eV", 1.0), ("meV", 1e-3)]:
        assert units.ENERGY_UNITS[name] == pytest.approx(ev, rel=1e-15)
    assert units.LENGTH_UNITS["Bohr"] == pytest.approx(ase.units.Bohr, rel=1e-15)
    assert units.LENGTH_UNITS["nm"] == pytest.approx(ase.units.nm, rel=1e-15)


def test_round_trip_and_lammps_styles():
    assert units.energy_factor("kcal/mol", "eV") * units.energy_factor("eV", "kcal/mol") == pytest.approx(1.0)
    for style, u in units.LAMMPS_UNITS.items():
        units.check_energy_unit(u["energy"])
        units.check_length_unit(u["length"])


def test_unknown_unit_lists_supported():
    with pytest.raises(ValueError, match="unknown energy unit 'kcal'.*kcal/mol"):
        units.energy_factor("kcal", "eV")
    with pytest.raises(ValueError, match="unknown length unit 'Ang'.*A, Bohr, nm"):
        units.length_factor("Ang", "A")
