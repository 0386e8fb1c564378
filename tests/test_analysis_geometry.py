"""Geometry sanity of bnn-analyze: shortest distances against covalent radii, bond-graph changes, atoms too
close, H2 formed, and their timing against the first threshold crossing, on crafted trajectories."""

import json
import re

import ase
import ase.io
import numpy as np
import pytest
from ase.data import atomic_numbers, covalent_radii

from bnnmd.analysis import (BOND_FACTOR, CLOSE_FACTOR, LASTING_FRAMES, PLOT_FILES, AnalysisError, analyze,
                            geometry_report, halt_timing, read_trajectory, write_report)
from bnnmd.cli.analyze import main
from bnnmd.data import bundled_dataset

# ethanol of rmd17: C1 C2 O3 H4 H5 H6 H7 H8 H9 (extxyz ids = index + 1); H4 H5 on C1 (with O3), H6-H8 on C2
STEP0, DSTEP = 100, 20          # frame f is MD step 100 + 20 f
H2_FRAME, CLASH_FRAME = 3, 5    # H7 and H8 moved to 0.70 A from frame 3; H9 pushed to 0.40 A from C1 from frame 5
N_FRAMES = 7
BONDS0 = ["C1-C2", "C1-O3", "C1-H4", "C1-H5", "C2-H6", "C2-H7", "C2-H8", "O3-H9"]


def ethanol():
    return bundled_dataset("rmd17_ethanol_test").to_ase(0)


def ethanol_frames():
    base = ethanol()
    rng = np.random.default_rng(7)
    frames = []
    for f in range(N_FRAMES):
        a = base.copy()
        p = a.positions
        p += rng.normal(scale=0.005, size=p.shape)  # small thermal noise: no bond changes
        if f >= H2_FRAME:  # H7 and H8 slide towards their midpoint until 0.70 A apart
            mid, u = 0.5 * (p[6] + p[7]), (p[7] - p[6]) / np.linalg.norm(p[7] - p[6])
            p[6], p[7] = mid - 0.35 * u, mid + 0.35 * u
        if f >= CLASH_FRAME:  # H9 pushed onto C1, 0.40 A away in the direction it came from
            u = (p[8] - p[0]) / np.linalg.norm(p[8] - p[0])
            p[8] = p[0] + 0.40 * u
        a.positions = p
        a.arrays["forces_std"] = np.full(len(a), 0.1)
        a.arrays["forces_std"][6] = 0.5 * f  # max over atoms 0.5 f: a threshold of 1.7 is first crossed at frame 4
        a.info["step"] = STEP0 + DSTEP * f
        frames.append(a)
    return frames


@pytest.fixture
def ethanol_traj(tmp_path):
    path = tmp_path / "ethanol.extxyz"
    ase.io.write(path, ethanol_frames(), format="extxyz")
    return read_trajectory(path)


def pair_table(positions, symbols, cell=None):
    """All pairs i < j: distance (ASE, minimum image when a cell is given) and d / (R_i + R_j)."""
    a = ase.Atoms(symbols, positions=positions, cell=cell, pbc=cell is not None)
    d = a.get_all_distances(mic=cell is not None)
    r = covalent_radii[[atomic_numbers[s] for s in symbols]]
    i, j = np.triu_indices(len(a), 1)
    return i, j, d[i, j], d[i, j] / (r[i] + r[j])


def test_ethanol_events_pairs_and_minima(ethanol_traj):
    traj = ethanol_traj
    g = geometry_report(traj)
    assert g.close_factor == CLOSE_FACTOR == 0.6 and g.bond_factor == BOND_FACTOR == 1.2
    assert g.lasting_frames == LASTING_FRAMES == 3
    assert g.radii == {"H": 0.31, "C": 0.76, "O": 0.66} and not g.periodic
    assert g.initial_bonds == BONDS0
    # per-frame minima against numpy/ASE on the positions the trajectory holds
    symbols = list(traj.elements)
    for f in range(N_FRAMES):
        i, j, d, ratio = pair_table(traj.positions(f), symbols)
        assert g.min_distance[f] == pytest.approx(d.min(), abs=1e-5)
        assert g.min_ratio[f] == pytest.approx(ratio.min(), abs=1e-5)
        k = int(np.argmin(ratio))
        assert g.min_ratio_pair[f] == f"{symbols[i[k]]}{i[k] + 1}-{symbols[j[k]]}{j[k] + 1}"
        bonded = {(int(a), int(b)) for a, b, x in zip(i, j, ratio) if x < 1.2}
        bonded0 = {(int(a), int(b)) for a, b, x in zip(*pair_table(traj.positions(0), symbols)[:2],
                                                         pair_table(traj.positions(0), symbols)[3]) if x < 1.2}
        assert g.bonds_broken[f] == len(bonded0 - bonded) and g.bonds_formed[f] == len(bonded - bonded0)
    np.testing.assert_array_equal(g.steps, STEP0 + DSTEP * np.arange(N_FRAMES))
    np.testing.assert_array_equal(g.bonds_formed, [0, 0, 0, 1, 1, 2, 2])  # H7-H8; then C1-H9
    np.testing.assert_array_equal(g.bonds_broken, 0)                      # H9 stays within 1.2 (R_O + R_H) of O3
    assert g.min_distance[CLASH_FRAME] == pytest.approx(0.40, abs=1e-5)
    assert g.min_distance_pair[CLASH_FRAME] == "C1-H9" and g.min_ratio_pair[CLASH_FRAME] == "C1-H9"
    assert g.min_ratio[CLASH_FRAME] == pytest.approx(0.40 / (0.76 + 0.31), abs=1e-5)
    assert g.min_distance_pair[H2_FRAME] == "H7-H8" and g.min_distance[H2_FRAME] == pytest.approx(0.70, abs=1e-5)

    h2 = "H2 formed: H7-H8 (not bonded in frame 0; shortest 0.700 A)"
    assert g.first_h2_formed == {"frame": H2_FRAME, "step": 160, "pairs": ["H7-H8"],
                                 "distance": pytest.approx(0.70, abs=1e-5), "description": h2}
    assert g.first_bond_change == {"frame": H2_FRAME, "step": 160, "broken": [], "formed": ["H7-H8"],
                                   "description": "bond graph changed: formed H7-H8"}
    tc = g.first_too_close
    assert (tc["frame"], tc["step"], tc["pair"], tc["atom_ids"], tc["elements"], tc["n_pairs"]) == \
        (CLASH_FRAME, 200, "C1-H9", [1, 9], ["C", "H"], 1)
    assert tc["distance"] == pytest.approx(0.40, abs=1e-5) and tc["ratio"] == pytest.approx(0.40 / 1.07, abs=1e-5)
    assert tc["description"] == "atoms too close: C1-H9 at 0.400 A = 0.37 x (R_i + R_j) (< 0.6)"
    lasting = "lasting bond-graph change: formed H7-H8 (to the last frame, 4 frames)"
    assert g.first_lasting_bond_change == {"frame": H2_FRAME, "step": 160, "broken": [], "formed": ["H7-H8"],
                                           "n_frames": 4, "to_end": True, "description": lasting}
    assert g.first_unphysical == {"frame": H2_FRAME, "step": 160, "events": ["h2_formed", "lasting_bond_change"],
                                  "description": h2 + "; " + lasting}
    assert g.notes == []
    assert "first unphysical step 160 (h2_formed, lasting_bond_change)" in repr(g)


def test_too_close_without_bond_change_and_a_dissociation(tmp_path):
    """H9 squeezed onto O3 (0.50 A) keeps the bond graph; later H4 leaves C1: a change, not a clash."""
    base = ethanol()
    frames = []
    for f in range(4):
        a = base.copy()
        if f >= 1:
            u = (a.positions[8] - a.positions[2]) / np.linalg.norm(a.positions[8] - a.positions[2])
            a.positions[8] = a.positions[2] + 0.50 * u
        if f >= 3:
            a.positions[3] += 3.0 * (a.positions[3] - a.positions[0]) / np.linalg.norm(a.positions[3] - a.positions[0])
        a.arrays["forces_std"] = np.zeros(len(a))
        frames.append(a)
    ase.io.write(tmp_path / "t.extxyz", frames, format="extxyz")
    g = geometry_report(read_trajectory(tmp_path / "t.extxyz"))
    assert g.first_too_close["frame"] == 1 and g.first_too_close["step"] == 1  # no info["step"]: the index
    assert g.first_too_close["pair"] == "O3-H9" and g.first_too_close["ratio"] == pytest.approx(0.5 / 0.97, abs=1e-5)
    assert g.first_unphysical == {"frame": 1, "step": 1, "events": ["too_close"],
                                  "description": g.first_too_close["description"]}
    assert g.first_bond_change == {"frame": 3, "step": 3, "broken": ["C1-H4"], "formed": [],
                                   "description": "bond graph changed: broken C1-H4"}
    assert g.first_lasting_bond_change == {  # in the last frame: a run that ends there counts
        "frame": 3, "step": 3, "broken": ["C1-H4"], "formed": [], "n_frames": 1, "to_end": True,
        "description": "lasting bond-graph change: broken C1-H4 (to the last frame, 1 frame)"}
    assert g.first_h2_formed is None
    # a looser bond criterion (1.8) also bonds C2-O3 (1.72 (R_i + R_j)) and, once H9 is squeezed, C1-H9; a
    # tighter clash criterion (0.5) misses the squeeze (0.52)
    loose = geometry_report(read_trajectory(tmp_path / "t.extxyz"), close_factor=0.5, bond_factor=1.8)
    assert loose.initial_bonds == BONDS0[:4] + ["C2-O3"] + BONDS0[4:] and loose.first_too_close is None
    assert loose.first_bond_change == {"frame": 1, "step": 1, "broken": [], "formed": ["C1-H9"],
                                       "description": "bond graph changed: formed C1-H9"}
    assert loose.first_unphysical["frame"] == 1 and loose.first_unphysical["events"] == ["lasting_bond_change"]
    assert loose.first_lasting_bond_change["n_frames"] == 3 and loose.first_lasting_bond_change["formed"] == ["C1-H9"]


def stretched_frames(stretch_at):
    """Ethanol with C2-H8 stretched to 1.30 A = 1.21 (R_C + R_H) in the frames ``stretch_at`` of ten."""
    base = ethanol()
    frames = []
    for f in range(10):
        a = base.copy()
        if f in stretch_at:
            u = (a.positions[7] - a.positions[1]) / np.linalg.norm(a.positions[7] - a.positions[1])
            a.positions[7] = a.positions[1] + 1.30 * u
        a.arrays["forces_std"] = np.zeros(len(a))
        a.info["step"] = 20 * f
        frames.append(a)
    return frames


@pytest.mark.parametrize("stretch_at,lasting_frames,first_lasting", [
    ({4}, 3, None),               # one hot vibration: a bond-graph change, not unphysical
    ({4, 5}, 3, None),
    ({4, 5, 6}, 3, 4),            # three frames: lasting
    ({4}, 1, 4),                  # lasting_frames=1: every change counts
    ({4, 5}, 2, 4),
    ({2, 8, 9}, 3, 8),            # the run to the last frame counts, the early single frame does not
])
def test_a_hot_bond_vibration_is_not_unphysical(tmp_path, stretch_at, lasting_frames, first_lasting):
    ase.io.write(tmp_path / "s.extxyz", stretched_frames(stretch_at), format="extxyz")
    g = geometry_report(read_trajectory(tmp_path / "s.extxyz"), lasting_frames=lasting_frames)
    assert g.first_bond_change["frame"] == min(stretch_at) and g.first_bond_change["broken"] == ["C2-H8"]
    np.testing.assert_array_equal(g.bonds_broken, [int(f in stretch_at) for f in range(10)])
    assert g.first_too_close is None and g.first_h2_formed is None
    if first_lasting is None:
        assert g.first_lasting_bond_change is None and g.first_unphysical is None
    else:
        run = sorted(f for f in stretch_at if f >= first_lasting)
        assert g.first_lasting_bond_change["frame"] == first_lasting
        assert g.first_lasting_bond_change["n_frames"] == len(run)
        assert g.first_lasting_bond_change["to_end"] == (run[-1] == 9)
        assert g.first_unphysical == {"frame": first_lasting, "step": 20 * first_lasting,
                                      "events": ["lasting_bond_change"],
                                      "description": g.first_lasting_bond_change["description"]}


def write_dump(path, frames, box=6.0, boundary="pp pp pp"):
    """A LAMMPS dump by hand: frames = [(step, [(id, type, x, y, z), ...])], rows in the given order."""
    lines = []
    for step, rows in frames:
        lines += ["ITEM: TIMESTEP", str(step), "ITEM: NUMBER OF ATOMS", str(len(rows)),
                  f"ITEM: BOX BOUNDS {boundary}"] + [f"0 {box}"] * 3 + ["ITEM: ATOMS id type x y z c_unc[1]"]
        lines += [f"{i} {t} {x} {y} {z} 0.1" for i, t, x, y, z in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# ids in scrambled order: C5 (type 1), H2 and H9 (type 2); box 6 A
PBC_FRAMES = [
    (0, [(9, 2, 3.0, 3.0, 4.5), (5, 1, 3.0, 3.0, 3.0), (2, 2, 3.0, 3.0, 1.95)]),   # C5-H2 bonded (1.05 A)
    (10, [(9, 2, 3.0, 3.0, 4.5), (5, 1, 3.0, 3.0, 3.0), (2, 2, 3.0, 3.0, 1.95)]),
    (20, [(9, 2, 5.8, 3.0, 3.0), (5, 1, 3.0, 3.0, 3.0), (2, 2, 0.1, 3.0, 3.0)]),    # H2-H9: 5.7 A, 0.3 A by image
]


def test_periodic_pair_close_only_through_the_minimum_image(tmp_path):
    path = write_dump(tmp_path / "pbc.dump", PBC_FRAMES)
    traj = read_trajectory(path, elements=["C", "H"])
    assert traj.periodic and list(traj.ids) == [2, 5, 9]
    g = geometry_report(traj)
    assert g.periodic and g.initial_bonds == ["H2-C5"]
    np.testing.assert_allclose(g.min_distance, [1.05, 1.05, 0.3], atol=1e-5)
    assert g.min_distance_pair == ["H2-C5", "H2-C5", "H2-H9"]
    np.testing.assert_allclose(g.min_ratio, [1.05 / 1.07, 1.05 / 1.07, 0.3 / 0.62], atol=1e-5)
    tc = g.first_too_close
    assert (tc["frame"], tc["step"], tc["pair"], tc["atom_ids"]) == (2, 20, "H2-H9", [2, 9])
    assert tc["distance"] == pytest.approx(0.3, abs=1e-5)
    assert g.first_h2_formed["step"] == 20 and g.first_h2_formed["pairs"] == ["H2-H9"]
    assert g.first_bond_change == {"frame": 2, "step": 20, "broken": ["H2-C5"], "formed": ["H2-H9"],
                                   "description": "bond graph changed: broken H2-C5; formed H2-H9"}
    assert g.first_unphysical["step"] == 20 and g.first_unphysical["events"] == ["too_close", "h2_formed",
                                                                                 "lasting_bond_change"]
    # the same coordinates in an open (ff) box: the H atoms are 5.7 A apart, only the C-H bond breaks
    g = geometry_report(read_trajectory(write_dump(tmp_path / "ff.dump", PBC_FRAMES, boundary="ff ff ff"),
                                        elements=["C", "H"]))
    assert not g.periodic and g.first_too_close is None and g.first_h2_formed is None
    np.testing.assert_allclose(g.min_distance, [1.05, 1.05, 2.8], atol=1e-5)
    assert g.min_distance_pair[2] == "C5-H9"
    assert g.first_unphysical == {"frame": 2, "step": 20, "events": ["lasting_bond_change"],
                                  "description": "lasting bond-graph change: broken H2-C5 (to the last frame, "
                                                 "1 frame)"}


def test_triclinic_minima_match_ase(tmp_path):
    """Ethanol in a small triclinic cell (images 3-4 A away): minima equal ASE's minimum-image distances."""
    rng = np.random.default_rng(3)
    cell = np.array([[5.0, 0.0, 0.0], [1.2, 5.2, 0.0], [-0.8, 0.9, 5.5]])
    frames = []
    for f in range(4):
        a = ethanol()
        a.positions += rng.normal(scale=0.01, size=a.positions.shape) + f * np.array([1.3, 0.7, 2.1])
        a.cell, a.pbc = cell, True
        a.wrap()
        a.arrays["forces_std"] = np.zeros(len(a))
        frames.append(a)
    ase.io.write(tmp_path / "tri.extxyz", frames, format="extxyz")
    traj = read_trajectory(tmp_path / "tri.extxyz")
    g = geometry_report(traj)
    assert g.periodic and g.initial_bonds == BONDS0 and g.first_unphysical is None
    for f, a in enumerate(frames):
        i, j, d, ratio = pair_table(a.positions, a.get_chemical_symbols(), cell)
        assert g.min_distance[f] == pytest.approx(d.min(), abs=1e-4)
        assert g.min_ratio[f] == pytest.approx(ratio.min(), abs=1e-4)


def test_no_pair_within_the_bond_cutoff_falls_back_to_all_pairs(tmp_path):
    frames = []
    for f, x in enumerate([3.0, 2.5]):
        a = ase.Atoms("CO", positions=[[0, 0, 0], [x, 0, 0]])
        a.arrays["forces_std"] = np.zeros(2)
        frames.append(a)
    ase.io.write(tmp_path / "co.extxyz", frames, format="extxyz")
    g = geometry_report(read_trajectory(tmp_path / "co.extxyz"))
    np.testing.assert_allclose(g.min_distance, [3.0, 2.5], atol=1e-6)
    np.testing.assert_allclose(g.min_ratio, [3.0 / 1.42, 2.5 / 1.42], atol=1e-6)
    assert g.initial_bonds == [] and g.first_unphysical is None
    assert "2 frame(s) had no pair within 1.2 x (R_i + R_j)" in g.notes[0]


@pytest.mark.parametrize("threshold,lead,in_time,text", [
    (1.7, -20, False, "the threshold crossing came 20 steps after the first unphysical geometry"),
    (0.7, 20, True, "the threshold crossing came 20 steps before the first unphysical geometry"),
    (1.2, 0, False, "the threshold crossing came in the same frame as the first unphysical geometry (step 160): "
                    "not in time at the dump interval"),
    (5.0, None, False, "the threshold was never crossed; the geometry was unphysical from step 160"),
])
def test_halt_timing_against_the_first_crossing(ethanol_traj, threshold, lead, in_time, text):
    res = analyze(ethanol_traj, threshold)
    t = res.halt_vs_geometry
    assert t["unphysical_step"] == 160 and t["unphysical_frame"] == H2_FRAME
    assert t["crossing_step"] == (None if lead is None else 160 - lead)
    assert (t["lead_steps"], t["in_time"], t["text"]) == (lead, in_time, text)
    assert t == halt_timing(res.geometry, res.first_crossing)
    assert res.text().splitlines()[3] == (
        "geometry: first unphysical step 160 (frame 3: h2 formed, lasting bond change); first threshold crossing "
        + ("none" if lead is None else f"step {160 - lead}") + f": {text}")


def test_halt_timing_when_the_geometry_stays_physical(tmp_path):
    frames = ethanol_frames()[:H2_FRAME]
    ase.io.write(tmp_path / "ok.extxyz", frames, format="extxyz")
    traj = read_trajectory(tmp_path / "ok.extxyz")
    t = analyze(traj, 0.7).halt_vs_geometry
    assert (t["crossing_step"], t["unphysical_step"], t["lead_steps"], t["in_time"]) == (140, None, None, True)
    assert t["text"] == ("the threshold crossing came before any unphysical geometry (none up to the last frame, "
                         "step 140)")
    t = analyze(traj, 5.0).halt_vs_geometry
    assert t["in_time"] is None and t["text"] == ("neither a threshold crossing nor an unphysical geometry up to "
                                                  "the last frame (step 140)")
    assert analyze(traj, 5.0, geometry=False).geometry is None


def test_report_section_and_plot(ethanol_traj, tmp_path):
    res = analyze(ethanol_traj, 1.7)
    files = write_report(res, ethanol_traj, tmp_path)
    assert PLOT_FILES[-1] == "geometry_time.png"
    for name in PLOT_FILES:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert files["geometry_time"] == str(tmp_path / "geometry_time.png")
    md = (tmp_path / "report.md").read_text()
    assert "## Geometry" in md and "![geometry_time](geometry_time.png)" in md
    assert "**The threshold crossing came 20 steps after the first unphysical geometry.**" in md
    assert "| **first unphysical geometry** | 160 | 3 | H2 formed: H7-H8" in md
    assert "| first atoms too close | 200 | 5 | atoms too close: C1-H9 at 0.400 A" in md
    assert "| first threshold crossing | 180 | 4 | atom 7 H, 2 > 1.7 |" in md
    assert "Frame 0 has 8 bonds: " + ", ".join(BONDS0) + "." in md
    # without geometry: no section, no geometry plot
    res = analyze(ethanol_traj, 1.7, geometry=False)
    files = write_report(res, ethanol_traj, tmp_path / "nogeo")
    assert "geometry_time" not in files and "## Geometry" not in (tmp_path / "nogeo" / "report.md").read_text()


def test_cli_prints_the_line_and_writes_the_json(ethanol_traj, tmp_path, capsys):
    src = ethanol_traj.source
    assert main([src, "--threshold", "1.7", "--out", str(tmp_path / "a"), "--json", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert ("geometry: first unphysical step 160 (frame 3: h2 formed, lasting bond change); first threshold crossing step "
            "180: the threshold crossing came 20 steps after the first unphysical geometry\n") in out
    assert (tmp_path / "a" / "geometry_time.png").is_file()
    data = json.loads((tmp_path / "a.json").read_text())
    geo = data["geometry"]
    assert (geo["close_factor"], geo["bond_factor"], geo["initial_bonds"]) == (0.6, 1.2, BONDS0)
    assert geo["first_unphysical"]["step"] == 160 and geo["first_unphysical"]["events"] == ["h2_formed",
                                                                                           "lasting_bond_change"]
    assert geo["lasting_frames"] == 3 and geo["first_lasting_bond_change"]["n_frames"] == 4
    assert geo["first_bond_change"]["formed"] == ["H7-H8"] and geo["first_h2_formed"]["pairs"] == ["H7-H8"]
    assert geo["first_too_close"]["step"] == 200 and geo["first_too_close"]["pair"] == "C1-H9"
    assert geo["series"]["step"] == [100, 120, 140, 160, 180, 200, 220]
    np.testing.assert_allclose(geo["series"]["min_distance"], geometry_report(ethanol_traj).min_distance)
    assert geo["series"]["min_ratio_pair"][CLASH_FRAME] == "C1-H9"
    assert data["halt_vs_geometry"]["lead_steps"] == -20 and data["halt_vs_geometry"]["in_time"] is False
    # --close-factor 0.72 calls the C2-H7/H8 squeeze of frame 3 too close; --bond-factor passes through
    i, j, d, ratio = pair_table(ethanol_traj.positions(H2_FRAME), list(ethanol_traj.elements))
    assert 0.6 < ratio.min() < 0.72
    assert main([src, "--threshold", "1.7", "--out", str(tmp_path / "b"), "--no-plots", "--json", "-",
                 "--close-factor", "0.72", "--bond-factor", "1.3", "--lasting-frames", "5"]) == 0
    data = json.loads(capsys.readouterr().out)
    geo = data["geometry"]
    assert (geo["close_factor"], geo["bond_factor"], geo["lasting_frames"]) == (0.72, 1.3, 5)
    assert geo["first_too_close"]["frame"] == H2_FRAME
    assert geo["first_too_close"]["ratio"] == pytest.approx(ratio.min(), abs=1e-5)
    assert geo["first_unphysical"]["events"] == ["too_close", "h2_formed", "lasting_bond_change"]
    assert geo["first_lasting_bond_change"]["n_frames"] == 4  # to the end: fewer than 5 frames count


@pytest.mark.parametrize("extra,message", [
    (["--close-factor", "1.5"], r"--close-factor 1.5 is not below --bond-factor 1.2\. Fix: atoms 'too close'"),
    (["--bond-factor", "0"], r"--bond-factor 0.0: it must be a finite number > 0\. Fix:"),
    (["--close-factor", "nan"], r"--close-factor nan: it must be a finite number > 0"),
    (["--lasting-frames", "0"], r"--lasting-frames 0: it must be a whole number >= 1\. Fix:"),
])
def test_bad_factors(ethanol_traj, tmp_path, capsys, extra, message):
    assert main([ethanol_traj.source, "--threshold", "1", "--out", str(tmp_path)] + extra) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    with pytest.raises(AnalysisError):
        geometry_report(ethanol_traj, close_factor=1.5)
