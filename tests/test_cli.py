"""The one error convention of the bnn-* commands (bnnmd.cli._errors)."""

from __future__ import annotations

import pytest

from bnnmd import BnnmdError
from bnnmd.cli._errors import fail, guarded
from bnnmd.nn import ConfigError


class _Known(BnnmdError):
    pass


def test_fail_prints_one_line_and_returns_2(capsys):
    assert fail("bnn-x", "bad thing; do this") == 2
    assert capsys.readouterr().err == "bnn-x: error: bad thing; do this\n"


def test_guarded_maps_known_and_os_errors_and_keeps_bugs(tmp_path, capsys):
    assert guarded("bnn-x", lambda: 0) == 0
    assert guarded("bnn-x", lambda: 130) == 130

    def known():
        raise _Known("frames have no forces; pass a labelled file")

    assert guarded("bnn-x", known) == 2
    assert capsys.readouterr().err == "bnn-x: error: frames have no forces; pass a labelled file\n"

    def config():  # every bnnmd error, whichever package raised it, is one line
        raise ConfigError("model.lmax is unknown; use l_max")

    assert guarded("bnn-x", config) == 2
    assert capsys.readouterr().err == "bnn-x: error: model.lmax is unknown; use l_max\n"

    (tmp_path / "afile").write_text("")

    def write_through_a_file():
        (tmp_path / "afile" / "out.json").write_text("{}")
        return 0

    assert guarded("bnn-x", write_through_a_file) == 2
    err = capsys.readouterr().err
    assert err.startswith("bnn-x: error: [Errno 20] Not a directory") and "afile" in err
    assert err.rstrip().endswith("check the path, its permissions and the free space")

    def bug():
        raise KeyError("a bug")

    with pytest.raises(KeyError):  # not an input problem: the traceback stays
        guarded("bnn-x", bug)
