"""bnnmd._core is built, importable, and checks the running torch."""

import pytest
import torch

import bnnmd
from bnnmd import _core
from bnnmd._extension import TorchVersionMismatch, check_torch_version


def test_core_reports_the_torch_it_was_built_with():
    assert _core.torch_version == torch.__version__
    assert bnnmd.compiled_torch_version == torch.__version__
    # the headers used at compile time are the same release
    assert torch.__version__.startswith(_core.torch_header_version)
    assert _core.cxx11_abi == torch._C._GLIBCXX_USE_CXX11_ABI


def test_version_is_the_project_version():
    from importlib.metadata import version

    assert bnnmd.__version__ == version("bnnmd")


def test_mismatch_names_both_versions_and_the_fix():
    with pytest.raises(TorchVersionMismatch) as err:
        check_torch_version("2.13.0+cpu", "2.11.0+cu130")
    msg = str(err.value)
    assert "2.13.0+cpu" in msg and "2.11.0+cu130" in msg
    assert "--no-build-isolation" in msg
    # a CPU and a CUDA build of one release differ too
    with pytest.raises(TorchVersionMismatch):
        check_torch_version("2.13.0+cpu", "2.13.0+cu130")
    check_torch_version("2.13.0+cpu", "2.13.0+cpu")


def test_mismatch_is_raised_on_import(monkeypatch):
    """load_core() compares with the running torch, not with a constant."""
    from bnnmd import _extension

    monkeypatch.setattr(_extension.torch, "__version__", "1.0.0+fake")
    with pytest.raises(TorchVersionMismatch, match="1.0.0\\+fake"):
        _extension.load_core()
