// bnnmd._core: the compiled half of bnnmd, exposed to Python with pybind11.
//
// Day one it reports what a user needs to diagnose the classic crash of C++/torch
// extensions: the bnnmd version and the torch version it was compiled against.
// bnnmd/__init__.py compares the latter with the running torch on import.
#include <pybind11/pybind11.h>

#include <torch/headeronly/version.h>

#include <string>

#ifndef BNNMD_VERSION
#define BNNMD_VERSION "0+unknown"
#endif
#ifndef BNNMD_TORCH_VERSION
#error "BNNMD_TORCH_VERSION must be set by CMake (torch.__version__ of the build interpreter)"
#endif

namespace py = pybind11;

namespace {

std::string header_torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) +
         "." + std::to_string(TORCH_VERSION_PATCH);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "bnnmd compiled core (C++ evaluator and build information)";
  m.attr("__version__") = BNNMD_VERSION;
  // torch.__version__ of the interpreter that built the extension, e.g. "2.13.0+cpu".
  m.attr("torch_version") = BNNMD_TORCH_VERSION;
  // The version in the torch headers the code was compiled with, e.g. "2.13.0".
  m.attr("torch_header_version") = header_torch_version();
#if defined(_GLIBCXX_USE_CXX11_ABI)
  m.attr("cxx11_abi") = static_cast<bool>(_GLIBCXX_USE_CXX11_ABI);
#else
  m.attr("cxx11_abi") = py::none();
#endif
}
