"""Data layer: readers, dataset, types, statistics, splits and every bad-input message."""

import json

import ase
import ase.io
import ase.stress
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from bnnmd import units
from bnnmd.data import (
    AtomicDataset, DataError, Split, TypeMapper, average_num_neighbours, bundled_dataset,
    bundled_path, compute_statistics, force_rms, neighbour_list, per_species_energy,
    protocol_split, random_split, read_ase, read_dataset, read_rmd17, read_sgdml, species_counts,
    write_extxyz,
)


@pytest.fixture(scope="module")
def ethanol():
    return bundled_dataset("rmd17_ethanol_train")


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _rmd17_arrays(n_frames=5, seed=0):
    rng = np.random.default_rng(seed)
    return dict(nuclear_charges=np.array([6, 1, 1, 1, 1], dtype=np.uint8),
                coords=rng.normal(size=(n_frames, 5, 3)), energies=rng.normal(size=n_frames),
                forces=rng.normal(size=(n_frames, 5, 3)))


# ---- readers ---------------------------------------------------------------

def test_bundled_rmd17_ethanol_matches_the_file(ethanol):
    raw = np.load(bundled_path("rmd17_ethanol_train"))
    assert len(ethanol) == 1000 and ethanol.num_atoms_total == 9000
    assert ethanol.energy_unit == "kcal/mol" and ethanol.length_unit == "A"
    np.testing.assert_array_equal(ethanol.positions, raw["coords"].reshape(-1, 3))
    np.testing.assert_array_equal(ethanol.forces, raw["forces"].reshape(-1, 3))
    np.testing.assert_array_equal(ethanol.energy, raw["energies"])
    np.testing.assert_array_equal(ethanol.frame(7)["atomic_numbers"], [6, 6, 8, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(ethanol.frame(7)["positions"], raw["coords"][7])


def test_shared_rmd17_files_all_read(shared_data):
    for path in sorted((shared_data / "rmd17").glob("*.npz")):
        ds = read_dataset(path)
        raw = np.load(path)
        assert len(ds) == len(raw["energies"]) == 1000
        np.testing.assert_array_equal(ds.forces, raw["forces"].reshape(-1, 3))


def test_sgdml_ccsd_t_ethanol(shared_data):
    path = shared_data / "ethanol_ccsd_t" / "ethanol_ccsd_t-train.npz"
    ds = read_dataset(path)
    raw = np.load(path)
    assert len(ds) == 1000
    np.testing.assert_array_equal(ds.energy, raw["E"][:, 0])  # (F, 1) in the file
    np.testing.assert_array_equal(ds.positions, raw["R"].reshape(-1, 3))
    assert ds.energy_unit == "kcal/mol" and ds.length_unit == "A"


def test_sgdml_units_from_file(tmp_path):
    a = _rmd17_arrays()
    p = _write_npz(tmp_path / "s.npz", z=a["nuclear_charges"], R=a["coords"], E=a["energies"][:, None],
                   F=a["forces"], e_unit="eV", r_unit="Ang")
    ds = read_sgdml(p)
    assert (ds.energy_unit, ds.length_unit) == ("eV", "A")


def _ase_frames(n=4, seed=1, periodic=False):
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        nat = 3 + i  # different sizes per frame
        atoms = ase.Atoms(numbers=rng.choice([1, 6, 8], size=nat), positions=rng.uniform(0, 4, (nat, 3)),
                          cell=np.diag([6.0, 7.0, 8.0]) if periodic else None, pbc=periodic)
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()), forces=rng.normal(size=(nat, 3)))
        frames.append(atoms)
    return frames


@pytest.mark.parametrize("suffix", ["extxyz", "db"])
@pytest.mark.parametrize("periodic", [False, True])
def test_ase_formats_round_trip(tmp_path, suffix, periodic):
    frames = _ase_frames(periodic=periodic)
    path = tmp_path / f"frames.{suffix}"
    ase.io.write(path, frames)
    ds = read_dataset(path)
    atol = 1e-7 if suffix == "extxyz" else 1e-12  # extxyz is text with 8 decimals
    assert len(ds) == 4 and list(ds.n_atoms) == [3, 4, 5, 6]
    assert ds.energy_unit == "eV"
    for i, atoms in enumerate(frames):
        f = ds.frame(i)
        np.testing.assert_allclose(f["positions"], atoms.positions, rtol=0, atol=atol)
        np.testing.assert_allclose(f["forces"], atoms.get_forces(), rtol=0, atol=atol)
        assert f["energy"] == pytest.approx(atoms.get_potential_energy(), abs=atol)
        np.testing.assert_array_equal(f["pbc"], [periodic] * 3)
        if periodic:
            np.testing.assert_allclose(f["cell"], atoms.cell.array)
        else:
            assert f["cell"] is None


def test_subset_and_units(ethanol):
    sub = ethanol.subset([5, 2])
    np.testing.assert_array_equal(sub.frame_index, [5, 2])
    np.testing.assert_array_equal(sub.frame(0)["forces"], ethanol.frame(5)["forces"])
    ev = sub.convert_units("eV", "nm")
    k = units.energy_factor("kcal/mol", "eV")
    np.testing.assert_allclose(ev.energy, sub.energy * k)
    np.testing.assert_allclose(ev.forces, sub.forces * k * 10.0)  # per nm = 10 x per A
    np.testing.assert_allclose(ev.positions, sub.positions / 10.0)
    assert ev.to_ase(0).get_chemical_formula() == "C2H6O"


# ---- types -----------------------------------------------------------------

def test_type_mapper(ethanol):
    tm = TypeMapper.from_atomic_numbers(ethanol.atomic_numbers)
    assert tm.type_names == ["H", "C", "O"]
    assert tm.types_of(ethanol.frame(0)["atomic_numbers"]).tolist() == [1, 1, 2, 0, 0, 0, 0, 0, 0]
    custom = TypeMapper(["C", "H", "O"])  # LAMMPS pair_coeff order
    assert custom.types_of([6, 1, 8]).tolist() == [0, 1, 2]


# ---- statistics ------------------------------------------------------------

def test_per_species_energy_recovers_known_values():
    rng = np.random.default_rng(3)
    e_true = np.array([-13.6, -1029.0, -2041.0])  # H, C, O
    zs, pos, n, energies = [], [], [], []
    for _ in range(30):  # varied compositions -> a well-posed least-squares problem
        z = rng.choice([1, 6, 8], size=rng.integers(2, 9))
        zs.append(z)
        pos.append(rng.normal(size=(len(z), 3)))
        n.append(len(z))
        energies.append(sum(e_true[{1: 0, 6: 1, 8: 2}[v]] for v in z))
    ds = AtomicDataset(np.concatenate(zs), np.concatenate(pos), n, energy=energies)
    tm = TypeMapper(["H", "C", "O"])
    np.testing.assert_allclose(per_species_energy(ds, tm), e_true, rtol=1e-10)


def test_statistics_of_rmd17_ethanol(ethanol):
    tm = TypeMapper(["H", "C", "O"])
    counts = species_counts(ethanol, tm)
    np.testing.assert_array_equal(counts[0], [6, 2, 1])
    e = per_species_energy(ethanol, tm)
    # one composition: the least-squares fit reproduces the mean energy
    assert counts[0] @ e == pytest.approx(ethanol.energy.mean(), rel=1e-12)
    assert force_rms(ethanol) == pytest.approx(np.sqrt(np.mean(ethanol.forces ** 2)))
    sub = ethanol.subset(range(20))
    # neighbour count against a direct distance count
    d = [np.linalg.norm(p[:, None] - p[None], axis=-1) for p in sub.positions.reshape(20, 9, 3)]
    brute = np.mean([((x > 0) & (x <= 2.0)).sum() / 9 for x in d])
    assert average_num_neighbours(sub, 2.0) == pytest.approx(brute)
    stats = compute_statistics(sub, tm, cutoff=5.0)
    assert stats.avg_num_neighbours == pytest.approx(8.0)  # ethanol fits in 5 A
    json.dumps(stats.to_dict())


# ---- splits ----------------------------------------------------------------

def test_rmd17_protocol_split(tmp_path):
    train, test = bundled_path("rmd17_ethanol_train"), bundled_path("rmd17_ethanol_test")
    s = protocol_split("rmd17", train, test, seed=3)
    assert (len(s.train), len(s.val), len(s.test)) == (970, 30, 200)
    assert not set(s.train.indices) & set(s.val.indices)
    assert s.train.file == str(train) and s.test.file == str(test)
    s.save(tmp_path / "split.json")
    back = Split.load(tmp_path / "split.json")
    for a, b in zip(s.parts().values(), back.parts().values()):
        np.testing.assert_array_equal(a.indices, b.indices)
        assert a.file == b.file
    assert (back.seed, back.protocol) == (3, "rmd17")
    tr, va, te = back.datasets()
    assert (len(tr), len(va), len(te)) == (970, 30, 200)
    # seeded: same seed same split, other seed other split
    np.testing.assert_array_equal(protocol_split("rmd17", train, test, seed=3).val.indices, s.val.indices)
    assert not np.array_equal(protocol_split("rmd17", train, test, seed=4).val.indices, s.val.indices)


def test_ccsd_t_protocol_split(shared_data):
    s = protocol_split("ccsd_t_ethanol", shared_data / "ethanol_ccsd_t" / "ethanol_ccsd_t-train.npz", seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (100, 30, 870)
    allidx = np.concatenate([p.indices for p in s.parts().values()])
    assert sorted(allidx.tolist()) == list(range(1000))


# ---- bad input: one test per case, each message names file, field and fix ---

def test_missing_key(tmp_path):
    a = _rmd17_arrays()
    del a["forces"]
    p = _write_npz(tmp_path / "noforces.npz", **a)
    with pytest.raises(DataError, match=r"noforces\.npz: field 'forces': is missing key\(s\) forces.*Fix: "):
        read_rmd17(p)


def test_mismatched_shapes(tmp_path):
    a = _rmd17_arrays()
    a["forces"] = a["forces"][:, :4]
    p = _write_npz(tmp_path / "shape.npz", **a)
    with pytest.raises(DataError, match=r"shape\.npz: field 'forces': has shape \(5, 4, 3\), expected \(5, 5, 3\).*Fix"):
        read_dataset(p)
    a = _rmd17_arrays()
    a["energies"] = a["energies"][:3]
    p = _write_npz(tmp_path / "energies.npz", **a)
    with pytest.raises(DataError, match=r"field 'energies': has 3 values for 5 frames"):
        read_dataset(p)


@pytest.mark.parametrize("field,key,value", [("forces", "forces", np.nan), ("energy", "energies", np.inf),
                                              ("positions", "coords", -np.inf)])
def test_nan_and_inf(tmp_path, field, key, value):
    a = _rmd17_arrays()
    a[key][3] = value
    p = _write_npz(tmp_path / "bad.npz", **a)
    with pytest.raises(DataError, match=rf"bad\.npz: field '{field}': contains NaN or inf values in 1 frame\(s\) \(frames 3\).*Fix"):
        read_dataset(p)


def test_unknown_element_symbols(ethanol):
    with pytest.raises(DataError, match=r"field 'type_names': has unknown element symbol 'Xx'.*Fix: use element symbols"):
        TypeMapper(["C", "H", "Xx"])
    with pytest.raises(DataError, match=r"'h' \(did you mean 'H'\?\)"):
        TypeMapper(["C", "h"])
    with pytest.raises(DataError, match=r"rmd17_ethanol_train\.npz: field 'atomic_numbers': contains element\(s\) O "
                                        r"that are not in type_names.*Fix: add O"):
        compute_statistics(ethanol, TypeMapper(["H", "C"]), 4.0)


def test_empty_files(tmp_path):
    for name in ("empty.npz", "empty.extxyz"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(DataError, match=rf"{name}: is empty \(0 bytes\).*Fix"):
            read_dataset(tmp_path / name)
    a = _rmd17_arrays(n_frames=0)
    p = _write_npz(tmp_path / "noframes.npz", **a)
    with pytest.raises(DataError, match=r"noframes\.npz: field 'coords': contains no frames"):
        read_dataset(p)


def test_split_larger_than_dataset(tmp_path):
    with pytest.raises(DataError, match=r"x\.npz: split asks for 970 train \+ 30 val \+ 0 test = 1000 frames "
                                        r"but the dataset has only 100.*Fix: reduce"):
        random_split(100, 970, 30, 0, file="x.npz")
    p = _write_npz(tmp_path / "small.npz", **_rmd17_arrays(n_frames=50))
    with pytest.raises(DataError, match=r"small\.npz: split asks for .* only 50"):
        protocol_split("rmd17", p, p)


def test_other_bad_files(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match=r"junk\.npz: is not a readable \.npz"):
        read_dataset(tmp_path / "junk.npz")
    p = _write_npz(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataError, match=r"other\.npz: is an npz with keys x, neither rMD17"):
        read_dataset(p)
    with pytest.raises(DataError, match=r"nothere\.npz: does not exist"):
        read_dataset(tmp_path / "nothere.npz")
    frames = _ase_frames()
    frames[2].calc = None
    ase.io.write(tmp_path / "partial.extxyz", frames)
    with pytest.raises(DataError, match=r"partial\.extxyz: field 'energy': is present in some frames but missing in frames \[2\]"):
        read_ase(tmp_path / "partial.extxyz")
    with pytest.raises(DataError, match=r"unknown split protocol 'md17'.*rmd17, ccsd_t_ethanol"):
        protocol_split("md17", p)


# ---- stress, mixed frames, extxyz keys and the writer (condensed phase) -----------------------------------
def _periodic_frames():
    """A water molecule in a 6 A box and a 9-atom ethanol in a triclinic cell, with ASE results."""
    import ase
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(3)
    water = ase.Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], cell=6.0 * np.eye(3), pbc=True)
    eth = bundled_dataset("rmd17_ethanol_train").to_ase(0)
    eth.cell, eth.pbc = [[9.0, 0, 0], [1.0, 8.0, 0], [0.5, 0.3, 10.0]], True
    frames = []
    for atoms in (water, eth):
        stress = rng.normal(size=(3, 3)) * 0.01
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()), forces=rng.normal(size=(len(atoms), 3)),
                                           stress=0.5 * (stress + stress.T))
        frames.append(atoms)
    return frames


def test_extxyz_with_stress_and_frames_of_different_sizes(tmp_path):
    import ase.io

    frames = _periodic_frames()
    ase.io.write(tmp_path / "mixed.extxyz", frames, format="extxyz")
    ds = read_ase(tmp_path / "mixed.extxyz")
    assert list(ds.n_atoms) == [3, 9] and ds.energy_unit == "eV" and ds.stress.shape == (2, 3, 3)
    for i, atoms in enumerate(frames):
        np.testing.assert_allclose(ds.stress[i], atoms.get_stress(voigt=False), rtol=0, atol=1e-12)
        np.testing.assert_allclose(ds.forces[ds.atoms_of(i)], atoms.get_forces(), rtol=0, atol=1e-8)  # 8 decimals
        assert ds.energy[i] == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(ds.cell[i], atoms.cell.array, atol=1e-12)
    sub = ds.subset([1])
    np.testing.assert_array_equal(sub.stress[0], ds.stress[1])
    assert "stress: yes" in repr(ds)
    # kcal/mol and nm: a stress is energy / length^3 (factors from ase.units, not bnnmd's table)
    from ase.units import kcal, mol

    conv = ds.convert_units("kcal/mol", "nm")
    np.testing.assert_allclose(conv.stress, ds.stress / (kcal / mol) * 10.0 ** 3, rtol=1e-9)


def test_extxyz_keys_of_the_labels(tmp_path):
    """Labels stored under other names (info / arrays), e.g. from a DFT code's converter."""
    import ase.io

    frames = _periodic_frames()
    for atoms in frames:
        atoms.info["dft_energy"] = atoms.get_potential_energy() + 1.0
        atoms.info["dft_stress"] = atoms.get_stress()  # Voigt, as ASE writes it
        atoms.arrays["dft_forces"] = 2.0 * atoms.get_forces()
        atoms.calc = None
    ase.io.write(tmp_path / "keys.extxyz", frames, format="extxyz")
    ds = read_ase(tmp_path / "keys.extxyz", energy_key="dft_energy", forces_key="dft_forces", stress_key="dft_stress")
    for i, atoms in enumerate(frames):
        assert ds.energy[i] == pytest.approx(atoms.info["dft_energy"], abs=1e-12)
        np.testing.assert_allclose(ds.forces[ds.atoms_of(i)], atoms.arrays["dft_forces"], atol=1e-8)
        np.testing.assert_allclose(ds.stress[i], ase.stress.voigt_6_to_full_3x3_stress(atoms.info["dft_stress"]),
                                   atol=1e-12)
    assert read_ase(tmp_path / "keys.extxyz").energy is None  # without the keys: no calculator results
    with pytest.raises(DataError, match=r"field 'energy'.*'dft_e' is in no frame.*Fix: check the key"):
        read_ase(tmp_path / "keys.extxyz", energy_key="dft_e")


def test_write_extxyz_round_trip(tmp_path):
    """Any dataset (here kcal/mol, A) written as extxyz in eV/A reads back equal after conversion."""
    import ase.io

    ase.io.write(tmp_path / "mixed.extxyz", _periodic_frames(), format="extxyz")
    ds = read_ase(tmp_path / "mixed.extxyz").convert_units("kcal/mol", "A")
    out = write_extxyz(ds, tmp_path / "out" / "again.extxyz")
    back = read_ase(out).convert_units("kcal/mol", "A")
    for name in ("atomic_numbers", "n_atoms", "pbc"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name))
    for name in ("positions", "energy", "forces", "stress", "cell"):
        np.testing.assert_allclose(getattr(back, name), getattr(ds, name), rtol=1e-7, atol=1e-9)
    molecules = bundled_dataset("rmd17_ethanol_test").subset(range(3))  # no cell, no stress
    back = read_ase(write_extxyz(molecules, tmp_path / "mol.extxyz"), energy_unit="eV").convert_units("kcal/mol")
    assert back.stress is None and back.cell is None
    np.testing.assert_allclose(back.energy, molecules.energy, rtol=1e-9)


def test_gzipped_extxyz_reads_as_the_plain_file(tmp_path):
    """A .gz text file is read from memory (bnnmd's fast path), equal to the plain file and to
    ASE's own reading of the .gz; an index and an explicit format still apply."""
    import gzip
    import shutil

    import ase.io

    plain = tmp_path / "mixed.extxyz"
    ase.io.write(plain, _periodic_frames(), format="extxyz")
    packed = tmp_path / "mixed.extxyz.gz"
    with open(plain, "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    a, b = read_ase(plain), read_ase(packed)
    for name in ("atomic_numbers", "n_atoms", "positions", "energy", "forces", "stress", "cell", "pbc"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name))
    assert len(ase.io.read(packed, index=":")) == len(b)
    last = read_ase(packed, index=-1)
    assert list(last.n_atoms) == [9] and last.stress is not None
    renamed = tmp_path / "mixed.dat.gz"  # the inner name says nothing: the format is given
    shutil.copy(packed, renamed)
    np.testing.assert_array_equal(read_ase(renamed, format="extxyz").forces, a.forces)


def test_stress_errors(tmp_path):
    import ase.io

    ds = bundled_dataset("rmd17_ethanol_train").subset(range(2))
    with pytest.raises(DataError, match=r"field 'stress'.*not periodic in x, y and z.*Fix: drop the stress"):
        AtomicDataset(ds.atomic_numbers, ds.positions, ds.n_atoms, stress=np.zeros((2, 3, 3)))
    with pytest.raises(DataError, match=r"field 'stress'.*has shape \(2, 6\), expected \(2, 3, 3\)"):
        AtomicDataset(ds.atomic_numbers, ds.positions, ds.n_atoms, cell=10 * np.eye(3), pbc=True,
                      stress=np.zeros((2, 6)))
    frames = _periodic_frames()
    second = frames[1]  # energy and forces, but no stress
    second.calc = SinglePointCalculator(second, energy=1.0, forces=np.zeros((len(second), 3)))
    ase.io.write(tmp_path / "half.extxyz", frames, format="extxyz")
    with pytest.raises(DataError, match=r"field 'stress'.*missing in frames \[1\]"):
        read_ase(tmp_path / "half.extxyz")


def test_concatenate_converts_to_the_first_units_and_keeps_cells_and_stresses():
    from bnnmd.data import AtomicDataset, bundled_dataset

    water = bundled_dataset("water_gfn2_test").subset([0, 1, 2])
    both = AtomicDataset.concatenate([water.subset([0, 1]), water.subset([2]).convert_units("kcal/mol", "Bohr")])
    assert (both.energy_unit, both.length_unit, len(both)) == ("eV", "A", 3)
    for name in ("positions", "energy", "forces", "cell", "stress"):
        np.testing.assert_allclose(getattr(both, name), getattr(water, name), rtol=1e-12, atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(both.pbc, water.pbc)
    ethanol = bundled_dataset("rmd17_ethanol_test").subset([0])  # no cell, no stress: dropped, zero cell
    mixed = AtomicDataset.concatenate([water.subset([0]), ethanol])
    assert mixed.stress is None and mixed.n_atoms.tolist() == [96, 9] and not mixed.pbc[1].any()
    np.testing.assert_allclose(mixed.energy[1], ethanol.energy[0] * 0.0433641, rtol=1e-5)  # kcal/mol -> eV
