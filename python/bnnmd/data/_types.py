"""Element <-> type-index mapping (``type_names``), as LAMMPS ``pair_coeff`` uses it."""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

import numpy as np
from ase.data import atomic_numbers as _Z_OF_SYMBOL
from ase.data import chemical_symbols

from bnnmd.data._errors import DataError


class TypeMapper:
    """Maps atomic numbers to type indices ``0 .. num_types - 1``.

    ``type_names`` are element symbols in type order; the model's species
    embedding and per-species statistics are indexed by type.

    Examples
    --------
    >>> tm = TypeMapper(["H", "C", "O"])
    >>> tm.types_of([6, 1, 8, 1]).tolist()
    [1, 0, 2, 0]
    >>> TypeMapper.from_atomic_numbers([8, 1, 6, 1]).type_names
    ['H', 'C', 'O']
    """

    def __init__(self, type_names: Sequence[str]):
        names = list(type_names)
        if not names:
            raise DataError("is empty", field="type_names", fix="give at least one element symbol")
        for name in names:
            if name not in _Z_OF_SYMBOL or name == "X":
                hint = ""
                if isinstance(name, str) and name.capitalize() in _Z_OF_SYMBOL:
                    hint = f" (did you mean {name.capitalize()!r}?)"
                raise DataError(f"has unknown element symbol {name!r}{hint}", field="type_names",
                                fix="use element symbols such as 'H', 'C', 'O', one per type")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise DataError(f"lists {', '.join(dup)} more than once", field="type_names",
                            fix="give each element once")
        self.type_names: List[str] = names
        self.atomic_numbers = np.array([_Z_OF_SYMBOL[n] for n in names], dtype=np.int64)
        self._lookup = np.full(119, -1, dtype=np.int64)
        self._lookup[self.atomic_numbers] = np.arange(len(names))

    @classmethod
    def from_atomic_numbers(cls, atomic_numbers: Iterable[int]) -> "TypeMapper":
        """One type per element present, ordered by atomic number."""
        return cls([chemical_symbols[int(z)] for z in np.unique(np.asarray(list(atomic_numbers)))])

    @property
    def num_types(self) -> int:
        return len(self.type_names)

    def types_of(self, atomic_numbers, file: Optional[str] = None) -> np.ndarray:
        """Type index of each atom; :class:`DataError` for an element without a type."""
        z = np.asarray(atomic_numbers, dtype=np.int64)
        types = self._lookup[np.clip(z, 0, 118)]
        if (types < 0).any():
            missing = sorted({chemical_symbols[int(v)] if 0 < v < 119 else str(int(v))
                              for v in z[types < 0]})
            raise DataError(
                f"contains element(s) {', '.join(missing)} that are not in type_names "
                f"{self.type_names}", file=file, field="atomic_numbers",
                fix=f"add {', '.join(missing)} to type_names (the model must be trained with them)")
        return types

    def __eq__(self, other) -> bool:
        return isinstance(other, TypeMapper) and self.type_names == other.type_names

    def __repr__(self) -> str:
        return f"TypeMapper({self.type_names})"
