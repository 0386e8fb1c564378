"""One error base class: every bnnmd error is a BnnmdError and keeps its built-in base."""

import pytest

import bnnmd
from bnnmd import BnnmdError
from bnnmd._extension import TorchVersionMismatch
from bnnmd.analysis._errors import AnalysisError
from bnnmd.data import DataError
from bnnmd.deploy import ExportError
from bnnmd.label import LabelError
from bnnmd.learn import LearnError
from bnnmd.nn import ConfigError
from bnnmd.posterior import CalibrationError, HaltRuleError, SampleError
from bnnmd.train import RunError, TrainConfig
from bnnmd.uq import EvaluationError

BUILTIN = {ConfigError: ValueError, SampleError: ValueError, ExportError: ValueError, LabelError: RuntimeError,
           RunError: RuntimeError, CalibrationError: ValueError, HaltRuleError: ValueError,
           EvaluationError: ValueError, DataError: ValueError, LearnError: RuntimeError,
           AnalysisError: ValueError, TorchVersionMismatch: ImportError}


@pytest.mark.parametrize("cls", list(BUILTIN), ids=lambda c: c.__name__)
def test_every_error_is_a_bnnmd_error(cls):
    assert issubclass(cls, BnnmdError) and issubclass(cls, BUILTIN[cls])
    e = cls("the file x is empty", fix="write it again")
    assert e.problem == "the file x is empty" and e.fix == "write it again"
    assert str(e) == "the file x is empty. Fix: write it again."
    assert str(cls("one message")) == "one message" and cls("one message").fix is None


def test_a_real_config_error_is_caught_as_bnnmd_error():
    assert bnnmd.BnnmdError is BnnmdError
    with pytest.raises(BnnmdError, match="sghmc.schedule"):
        TrainConfig.from_dict({"method": "sghmc", "sghmc": {"schedule": "clock"}})


def test_export_names_the_path_it_cannot_write(tmp_path, capsys):
    """A bad output path is named as typed (not a parent or a temporary file), before any work."""
    from bnnmd.cli.export import main
    from bnnmd.data import bundled_dataset
    from helpers import write_samples

    write_samples(tmp_path / "samples", bundled_dataset("rmd17_ethanol_train").subset(range(2)), k=1)
    (tmp_path / "afile").write_text("")
    for out, want in ((tmp_path / "afile" / "model.pth", f"{tmp_path / 'afile' / 'model.pth'}: cannot be written: "
                       f"{tmp_path / 'afile'} is a file, not a directory"),
                      (tmp_path / "afile" / "sub" / "model.pt2", f"{tmp_path / 'afile' / 'sub' / 'model.pt2'}: "
                       f"cannot be written: {tmp_path / 'afile'} is a file"),
                      (tmp_path / "samples", f"{tmp_path / 'samples'} is a directory; give a file name")):
        assert main([str(tmp_path / "samples"), str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"bnn-export: error: {want}") and err.count("\n") == 1, err
        assert ".tmp" not in err
