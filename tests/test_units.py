import ase.units
import pytest

from bnnmd import units


def test_table_matches_ase():
    for name, ev in [("kcal/mol", ase.units.kcal / ase.units.mol), ("kJ/mol", ase.units.kJ / ase.units.mol),
                     ("Hartree", ase.units.Hartree), ("eV", 1.0), ("meV", 1e-3)]:
        assert units.ENERGY_UNITS[name] == pytest.approx(ev, rel=1e-15)
    assert units.LENGTH_UNITS["Bohr"] == pytest.approx(ase.units.Bohr, rel=1e-15)
    assert units.LENGTH_UNITS["nm"] == pytest.approx(ase.units.nm, rel=1e-15)


# CODATA 2014 (the set ase.units uses by default), written out here: independent of bnnmd's table
AVOGADRO = 6.022140857e23  # 1/mol
ELEMENTARY_CHARGE = 1.6021766208e-19  # C, so 1 eV = 1.6021766208e-19 J
HARTREE_EV = 27.21138602
BOHR_A = 0.52917721067
# LAMMPS's own Boltzmann constants (src/update.cpp): units real in kcal/mol/K, units metal in eV/K
LAMMPS_BOLTZ = {"real": 0.0019872067, "metal": 8.617343e-5}


def test_factors_against_codata_and_lammps():
    kcal_mol = 4184.0 / (AVOGADRO * ELEMENTARY_CHARGE)  # 1 kcal = 4184 J; in eV per molecule
    assert units.energy_factor("kcal/mol", "eV") == pytest.approx(kcal_mol, rel=1e-12)
    assert units.energy_factor("eV", "kcal/mol") == pytest.approx(1 / kcal_mol, rel=1e-12)
    assert units.energy_factor("Hartree", "kcal/mol") == pytest.approx(HARTREE_EV / kcal_mol, rel=1e-9)
    assert units.length_factor("Bohr", "nm") == pytest.approx(BOHR_A / 10, rel=1e-9)
    # each LAMMPS style's energy unit: the ratio of its Boltzmann constants (LAMMPS's 8 digits)
    real, metal = units.LAMMPS_UNITS["real"], units.LAMMPS_UNITS["metal"]
    assert units.energy_factor(real["energy"], metal["energy"]) == pytest.approx(
        LAMMPS_BOLTZ["metal"] / LAMMPS_BOLTZ["real"], rel=1e-6)
    assert units.length_factor(real["length"], "A") == units.length_factor(metal["length"], "A") == 1.0  # Angstrom
    for style, u in units.LAMMPS_UNITS.items():
        units.check_energy_unit(u["energy"])
        units.check_length_unit(u["length"])


def test_lammps_pressure_factor_is_ases():
    """LAMMPS' nktv2p of real (atm) and metal (bar) against ASE's pressure units."""
    import ase.units as au

    assert units.lammps_pressure_factor("metal", "eV", "A") == pytest.approx(1 / au.bar, rel=1e-7)
    atm = 101325 * au.Pascal
    assert units.lammps_pressure_factor("real", "kcal/mol", "A") == pytest.approx(au.kcal / au.mol / atm, rel=1e-6)
    assert units.lammps_pressure_factor("real", "eV", "A") == pytest.approx(1 / atm, rel=1e-6)


def test_unknown_unit_lists_supported():
    with pytest.raises(ValueError, match="unknown energy unit 'kcal'.*kcal/mol"):
        units.energy_factor("kcal", "eV")
    with pytest.raises(ValueError, match="unknown length unit 'Ang'.*A, Bohr, nm"):
        units.length_factor("Ang", "A")
