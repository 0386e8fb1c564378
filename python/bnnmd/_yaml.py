"""Reading a YAML config file: the one reader of ``bnn-train`` and ``bnn-learn`` configs.

It refuses what YAML itself lets through silently: an empty file (which would start a default run
without a word) and a key given twice in one mapping (YAML keeps the last one).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Type, Union

import yaml

from bnnmd._errors import BnnmdError


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that raises on a key given twice in one mapping, naming both lines."""

    def construct_mapping(self, node, deep=False):
        seen: Dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice, on lines {seen[key]} and {line}", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_config_file(path: Union[str, os.PathLike], error: Type[BnnmdError]) -> dict:
    """The mapping in the YAML file ``path``; ``error`` (the caller's config error class) for a missing
    or empty file, invalid YAML, a duplicated key (both lines named) or a top level that is no mapping.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "c.yaml"
    >>> _ = p.write_text("seed: 1\\nmethod: map\\nseed: 2\\n")
    >>> read_config_file(p, BnnmdError)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bnnmd._errors.BnnmdError: ...c.yaml: key 'seed' is given twice, on lines 1 and 3; keep one of them
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise error(f"{path}: config file does not exist") from None
    if not text.strip() or all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()):
        raise error(f"{path}: the config file is empty; write the settings into it (see examples/ and docs/), "
                    "or give {} to ask for every default")
    try:
        d = yaml.load(text, Loader=_StrictLoader)
    except yaml.constructor.ConstructorError as exc:
        if "given twice" in str(exc.problem):
            raise error(f"{path}: {exc.problem}; keep one of them") from None
        raise error(f"{path}: not valid YAML ({exc})") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(d, dict):
        raise error(f"{path}: the config must be a mapping of keys to values, got {type(d).__name__}")
    return d
