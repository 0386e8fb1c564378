"""Batching frames into one flat graph."""

import ase
import numpy as np
import pytest
import torch

from bnnmd.data import AtomicDataset, DataError, GraphDataset, TypeMapper, bundled_dataset, keys as K


def _edge_vectors(b):
    i, j = b[K.EDGE_INDEX]
    return b[K.POSITIONS][j] - b[K.POSITIONS][i] + b[K.EDGE_SHIFT]


def _mixed_dataset():
    """Two molecules of different size and one periodic box."""
    eth = bundled_dataset("rmd17_ethanol_train")
    rng = np.random.default_rng(0)
    box = ase.Atoms("H8O4", positions=rng.uniform(0, 3.2, (12, 3)), cell=[[3.2, 0, 0], [0.4, 3.0, 0], [0, 0.3, 3.4]],
                    pbc=True)
    zs = [eth.frame(0)["atomic_numbers"], np.array([8, 1, 1]), box.numbers]
    pos = [eth.frame(0)["positions"], np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]), box.positions]
    cells = [np.zeros((3, 3)), np.zeros((3, 3)), box.cell.array]
    return AtomicDataset(np.concatenate(zs), np.concatenate(pos), [9, 3, 12], energy=[1.0, 2.0, 3.0],
                         forces=rng.normal(size=(24, 3)), cell=cells,
                         pbc=[[False] * 3, [False] * 3, [True] * 3])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_equals_frames_one_by_one(dtype):
    ds = _mixed_dataset()
    gd = GraphDataset(ds, TypeMapper(["H", "C", "O"]), cutoff=2.5)
    b = gd.batch([2, 0, 1], dtype=dtype)
    assert b[K.POSITIONS].dtype == dtype and b[K.EDGE_INDEX].dtype == torch.int64
    assert b[K.NUM_ATOMS].tolist() == [12, 9, 3]
    assert b[K.TOTAL_ENERGY].tolist() == [3.0, 1.0, 2.0]
    vec_b = _edge_vectors(b)
    start = 0
    edge_start = 0
    for frame in (2, 0, 1):
        single = gd.batch([frame], dtype=dtype)
        n, e = single[K.POSITIONS].shape[0], single[K.EDGE_INDEX].shape[1]
        assert e > 0
        # atoms, types, forces, edges and edge vectors of this frame, offset by the atoms before it
        for key in (K.POSITIONS, K.ATOM_TYPE, K.FORCES, K.ATOMIC_NUMBERS):
            torch.testing.assert_close(b[key][start:start + n], single[key])
        torch.testing.assert_close(b[K.EDGE_INDEX][:, edge_start:edge_start + e], single[K.EDGE_INDEX] + start)
        torch.testing.assert_close(vec_b[edge_start:edge_start + e], _edge_vectors(single))
        assert (b[K.BATCH][start:start + n] == b[K.BATCH][start]).all()
        start += n
        edge_start += e
    assert start == b[K.POSITIONS].shape[0] and edge_start == b[K.EDGE_INDEX].shape[1]
    # no edge crosses frames
    assert (b[K.BATCH][b[K.EDGE_INDEX][0]] == b[K.BATCH][b[K.EDGE_INDEX][1]]).all()
    # periodic frame: edge lengths within the cutoff, images present (cell < 2 x cutoff)
    assert (vec_b.norm(dim=1) <= 2.5 + 1e-6).all()
    assert (b[K.EDGE_CELL_SHIFT][b[K.BATCH][b[K.EDGE_INDEX][0]] == 0].abs().sum(dim=1) > 0).any()


def test_batches_cover_every_frame_once():
    ds = bundled_dataset("rmd17_ethanol_train").subset(range(10))
    gd = GraphDataset(ds, TypeMapper(["H", "C", "O"]), cutoff=4.0)
    seen = [b[K.FRAME_INDEX] for b in gd.batches(4, shuffle=True, seed=1)]
    assert [len(s) for s in seen] == [4, 4, 2]
    assert sorted(torch.cat(seen).tolist()) == list(range(10))
    again = [b[K.FRAME_INDEX] for b in gd.batches(4, shuffle=True, seed=1)]
    assert all(torch.equal(a, c) for a, c in zip(seen, again))
    with pytest.raises(DataError, match="batch_size must be >= 1"):
        next(gd.batches(0))
    with pytest.raises(DataError, match="at least one frame"):
        gd.batch([])
