// bnnmd._core: the compiled half of bnnmd, exposed to Python with pybind11.
//
// Build information (the torch version it was compiled against, checked on import by
// bnnmd/__init__.py), the units table, and the evaluator core shared with the LAMMPS plugin.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <torch/headeronly/version.h>

#include <map>
#include <string>
#include <type_traits>
#include <variant>

#include "bnn_evaluator.h"
#include "bnn_units.h"

#ifndef BNNMD_VERSION
#define BNNMD_VERSION "0+unknown"
#endif
#ifndef BNNMD_TORCH_VERSION
#error "BNNMD_TORCH_VERSION must be set by CMake (torch.__version__ of the build interpreter)"
#endif

namespace py = pybind11;
using namespace pybind11::literals;

namespace {

std::string header_torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

template <typename T>
py::array_t<T> to_array(const std::vector<T>& v, std::vector<py::ssize_t> shape) {
  py::array_t<T> a(shape);
  std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

py::dict std_map_dict(const bnnmd::StdMap& s) {
  return py::dict("kind"_a = s.kind, "std"_a = s.std, "factor"_a = s.factor);
}

// The metadata as a dict in written order (optional keys only when set; maps as std_map_dict).
py::dict metadata_dict(const bnnmd::Metadata& m) {
  py::dict d;
  for (const auto& entry : bnnmd::metadata_values(m))
    d[py::str(entry.first)] = std::visit([](const auto& v) -> py::object {
      if constexpr (std::is_same_v<std::decay_t<decltype(v)>, bnnmd::StdMap>)
        return std_map_dict(v);
      else
        return py::cast(v);
    }, entry.second);
  return d;
}

// A dict of metadata_dict's form (maps as dicts of kind, std, factor, or objects with those attributes,
// like bnnmd.posterior.StdMap) -> bnnmd.txt. A key that is absent or None is not given; every error is a
// ValueError (pybind11 maps std::invalid_argument to it).
std::string metadata_text(const py::dict& d) {
  std::map<std::string, bnnmd::MetadataValue> values;
  for (const bnnmd::MetadataKey& k : bnnmd::metadata_keys()) {
    if (!d.contains(k.name) || d[py::str(k.name)].is_none()) continue;
    py::object v = d[py::str(k.name)];
    try {
      values[k.name] = std::visit([&](const auto& blank) -> bnnmd::MetadataValue {
        using T = std::decay_t<decltype(blank)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return std::string(py::str(v));  // as Python's str(v)
        } else if constexpr (std::is_same_v<T, bnnmd::StdMap>) {
          auto field = [&](const char* f) -> py::object {
            return py::isinstance<py::dict>(v) ? py::object(v[f]) : v.attr(f);
          };
          bnnmd::StdMap map;
          map.kind = py::cast<std::string>(field("kind"));
          map.std = py::cast<std::vector<double>>(field("std"));
          map.factor = py::cast<std::vector<double>>(field("factor"));
          return map;
        } else {
          return py::cast<T>(v);
        }
      }, k.blank);
    } catch (const py::cast_error&) {
      throw py::value_error("metadata value of " + k.name + " = " + std::string(py::repr(v)) + " has the wrong type");
    } catch (const py::error_already_set&) {  // a map without kind, std or factor
      throw py::value_error("metadata value of " + k.name + " = " + std::string(py::repr(v)) +
                            " is not a calibration map (kind, std, factor)");
    }
  }
  return bnnmd::metadata_to_text(bnnmd::metadata_from_values(values));
}

template <typename Seq>
py::tuple str_tuple(const Seq& names) {
  py::list out;
  for (const auto& n : names) out.append(py::str(n));
  return py::tuple(out);
}

using F64 = py::array_t<double, py::array::c_style | py::array::forcecast>;
using I64 = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

void check_energies(const F64& energy, const F64& energy_std) {
  if (energy.ndim() != 1 || energy.size() != energy_std.size() || energy.size() < 1)
    throw py::value_error("energy and energy_std must have the same length k >= 1");
}

py::dict energy_dict(const bnnmd::EnergyStats& r) {
  return py::dict("energy"_a = r.mean, "energy_std"_a = r.std, "energy_std_epistemic"_a = r.std_epistemic,
                  "energy_std_aleatoric"_a = r.std_aleatoric);
}

// fn(k, n, mean, total, epistemic, aleatoric) fills the arrays
template <typename Fn>
py::dict force_dict(const F64& forces, const F64& forces_std, Fn fn) {
  if (forces.ndim() != 3 || forces.shape(2) != 3 || forces_std.ndim() != 2 || forces.shape(0) < 1 ||
      forces_std.shape(0) != forces.shape(0) || forces_std.shape(1) != forces.shape(1))
    throw py::value_error("forces must be (k, n, 3) and forces_std (k, n), k >= 1");
  const int k = static_cast<int>(forces.shape(0)), n = static_cast<int>(forces.shape(1));
  py::array_t<double> mean({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(3)});
  py::array_t<double> tot(n), epi(n), alea(n);
  fn(k, n, mean.mutable_data(), tot.mutable_data(), epi.mutable_data(), alea.mutable_data());
  return py::dict("forces"_a = mean, "forces_std"_a = tot, "forces_std_epistemic"_a = epi,
                  "forces_std_aleatoric"_a = alea);
}

// The virial moments as a dict: 3 x 3 arrays (mean and the per-component stds) and the isotropic part
// tr(W)/3 (P_virial x V, energy units).
py::dict virial_dict(const bnnmd::VirialStats& r) {
  auto mat = [](const double* v) {
    py::array_t<double> a({3, 3});
    std::copy(v, v + 9, a.mutable_data());
    return a;
  };
  const bnnmd::EnergyStats& p = r.pressure_volume;
  return py::dict("virial"_a = mat(r.mean), "virial_std"_a = mat(r.std), "virial_std_epistemic"_a = mat(r.std_epistemic),
                  "virial_std_aleatoric"_a = mat(r.std_aleatoric), "pressure_volume"_a = p.mean,
                  "pressure_volume_std"_a = p.std, "pressure_volume_std_epistemic"_a = p.std_epistemic,
                  "pressure_volume_std_aleatoric"_a = p.std_aleatoric);
}

py::dict compute(const bnnmd::Evaluator& ev, F64 pos, I64 types, I64 edge_index, F64 edge_shift, int nlocal) {
  const int n = static_cast<int>(types.size());
  if (pos.ndim() != 2 || pos.shape(0) != n || pos.shape(1) != 3)
    throw py::value_error("positions must have shape (n, 3) with n = len(types)");
  if (edge_index.ndim() != 2 || edge_index.shape(0) != 2)
    throw py::value_error("edge_index must have shape (2, n_edges)");
  const int64_t ne = edge_index.shape(1);
  if (edge_shift.ndim() != 2 || edge_shift.shape(0) != ne || edge_shift.shape(1) != 3)
    throw py::value_error("edge_shift must have shape (n_edges, 3)");
  if (nlocal < 0 || nlocal > n) throw py::value_error("nlocal must be in 0..n");
  const int64_t* e = edge_index.data();
  for (int64_t i = 0; i < 2 * ne; ++i)
    if (e[i] < 0 || e[i] >= n) throw py::value_error("edge_index refers to an atom >= n");
  bnnmd::SampleOutput s;
  {
    py::gil_scoped_release release;
    s = ev.evaluate(pos.data(), types.data(), n, nlocal, e, edge_shift.data(), ne);
  }
  const int k = s.k;
  bnnmd::EnergyStats es = ev.energy_stats(s.energy.data(), s.energy_std.data(), k);
  py::array_t<double> mean({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(3)});
  py::array_t<double> tot(n), epi(n), alea(n);
  ev.force_stats(s.forces.data(), s.forces_std.data(), k, n, mean.mutable_data(), tot.mutable_data(),
                 epi.mutable_data(), alea.mutable_data());
  py::dict out(
      "energy"_a = es.mean, "energy_std"_a = es.std, "energy_std_epistemic"_a = es.std_epistemic,
      "energy_std_aleatoric"_a = es.std_aleatoric, "forces"_a = mean, "forces_std"_a = tot,
      "forces_std_epistemic"_a = epi, "forces_std_aleatoric"_a = alea,
      "samples"_a = py::dict("total_energy"_a = to_array(s.energy, {k}),
                             "total_energy_std"_a = to_array(s.energy_std, {k}),
                             "atomic_energy"_a = to_array(s.atomic_energy, {k, n}),
                             "forces"_a = to_array(s.forces, {k, n, 3}),
                             "forces_std"_a = to_array(s.forces_std, {k, n}),
                             "virial"_a = to_array(s.virial, {k, 3, 3}),
                             "virial_std"_a = to_array(s.virial_std, {k})));
  for (auto item : virial_dict(bnnmd::virial_stats(s.virial.data(), s.virial_std.data(), k)))
    out[item.first] = item.second;
  return out;
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
  m.attr("format_version") = bnnmd::kFormatVersion;
  m.attr("same_place_distance") = bnnmd::kSamePlace;
  m.attr("metadata_file") = bnnmd::kMetadataFile;  // the name of bnnmd.txt in an exported file
  {
    std::vector<std::string> required, optional;
    for (const bnnmd::MetadataKey& k : bnnmd::metadata_keys()) (k.optional ? optional : required).push_back(k.name);
    m.attr("metadata_keys") = str_tuple(required);  // every exported file has them, in this order
    m.attr("metadata_optional_keys") = str_tuple(optional);  // written when known
  }
  // the model's outputs: the keys of a TorchScript model's dict, the order of a .pt2 graph's outputs
  m.attr("output_keys") = str_tuple(bnnmd::kOutputKeys);

  m.def("units_table", [] {
    return py::dict("energy"_a = bnnmd::energy_units(), "length"_a = bnnmd::length_units());
  }, "The C++ units table (factors to eV and Angstrom), the twin of bnnmd.units.");

  m.def("calibration_factor", [](const std::string& map_text, F64 s) {
    const bnnmd::StdMap map = bnnmd::parse_std_map(map_text, "calibration map");
    py::array_t<double> out(s.size());
    for (py::ssize_t i = 0; i < s.size(); ++i) out.mutable_data()[i] = map.factor_at(s.data()[i]);
    return out;
  }, "map_text"_a, "s"_a,
        "Factors c(s) of a calibration map written as in bnnmd.txt ('scale C' or 'isotonic S:C ...'), "
        "the twin of bnnmd.uq.StdMap.factor_at.");

  py::class_<bnnmd::Evaluator>(m, "Evaluator", R"doc(
An exported bnnmd model, evaluated by the C++ core (the one the LAMMPS plugin uses).

Evaluator(path, device="cpu", energy_unit="", length_unit="")
  path: TorchScript (.pth) or AOTInductor package (.pt2; format says which);
  units "" = the model's own; device cpu, cuda, cuda:N or auto.
compute(positions, types, edge_index, edge_shift, nlocal) -> dict
  means, calibrated stds, the virial moments (as virial_stats), and the per-sample outputs under
  "samples".
)doc")
      .def(py::init<const std::string&, const std::string&, const std::string&, const std::string&>(),
           "path"_a, "device"_a = "cpu", "energy_unit"_a = "", "length_unit"_a = "")
      .def_property_readonly("metadata", [](const bnnmd::Evaluator& e) { return metadata_dict(e.metadata()); })
      .def_property_readonly("device", &bnnmd::Evaluator::device)
      .def_property_readonly("format", &bnnmd::Evaluator::format)
      .def_property_readonly("cutoff", &bnnmd::Evaluator::cutoff)
      .def_property_readonly("energy_unit", &bnnmd::Evaluator::energy_unit)
      .def_property_readonly("length_unit", &bnnmd::Evaluator::length_unit)
      .def_property_readonly("halt_threshold", &bnnmd::Evaluator::halt_threshold)
      .def("compute", &compute, "positions"_a, "types"_a, "edge_index"_a, "edge_shift"_a, "nlocal"_a)
      .def("energy_stats",
           [](const bnnmd::Evaluator& ev, F64 energy, F64 energy_std) {
             check_energies(energy, energy_std);
             return energy_dict(ev.energy_stats(energy.data(), energy_std.data(), static_cast<int>(energy.size())));
           }, "energy"_a, "energy_std"_a, "The C++ aggregation of k energies (with the model's calibration).")
      .def("force_stats",
           [](const bnnmd::Evaluator& ev, F64 forces, F64 forces_std) {
             return force_dict(forces, forces_std, [&](int k, int n, double* m, double* t, double* e, double* a) {
               ev.force_stats(forces.data(), forces_std.data(), k, n, m, t, e, a);
             });
           }, "forces"_a, "forces_std"_a, "The C++ aggregation of k per-sample forces (with the model's calibration).");

  m.def("energy_stats",
        [](F64 energy, F64 energy_std, const std::string& calibration) {
          check_energies(energy, energy_std);
          const bnnmd::StdMap map = bnnmd::parse_std_map(calibration, "calibration map");
          return energy_dict(bnnmd::energy_stats(energy.data(), energy_std.data(), static_cast<int>(energy.size()), map));
        }, "energy"_a, "energy_std"_a, "calibration"_a = "scale 1.0",
        "Mixture moments of k energies [k] and their sigma_E [k], calibrated by a map written as in bnnmd.txt: "
        "the one implementation behind bnnmd.deploy.energy_stats and the evaluator.");
  m.def("force_stats",
        [](F64 forces, F64 forces_std, const std::string& calibration) {
          const bnnmd::StdMap map = bnnmd::parse_std_map(calibration, "calibration map");
          return force_dict(forces, forces_std, [&](int k, int n, double* mn, double* t, double* e, double* a) {
            bnnmd::force_stats(forces.data(), forces_std.data(), k, n, map, mn, t, e, a);
          });
        }, "forces"_a, "forces_std"_a, "calibration"_a = "scale 1.0",
        "Per-atom force mean and stds of k per-sample forces [k, n, 3] and sigma_F [k, n], calibrated: "
        "the one implementation behind bnnmd.deploy.force_stats and the evaluator.");
  m.def("virial_stats",
        [](F64 virial, F64 virial_std) {
          if (virial.ndim() != 3 || virial.shape(1) != 3 || virial.shape(2) != 3 || virial.shape(0) < 1 ||
              virial_std.ndim() != 1 || virial_std.shape(0) != virial.shape(0))
            throw py::value_error("virial must be (k, 3, 3) and virial_std (k,), k >= 1");
          return virial_dict(bnnmd::virial_stats(virial.data(), virial_std.data(), static_cast<int>(virial.shape(0))));
        }, "virial"_a, "virial_std"_a,
        "Mixture moments of k virials [k, 3, 3] and their sigma_W [k] (not calibrated): mean and per-component "
        "total / epistemic / aleatoric std (3 x 3), and of tr(W)/3 (pressure_volume*): the one implementation "
        "behind bnnmd.posterior.virial_stats, the evaluator and LAMMPS's compute bnn/atom.");
  m.def("missing_cpu_features", &bnnmd::missing_cpu_features, "isa"_a,
        "The CPU features of AOTInductor's AOTI_CPU_ISA (e.g. 'AVX512 AVX512_VNNI') that this CPU lacks, "
        "comma-separated ('' when none): the check the evaluator makes before loading a .pt2 package.");
  m.def("read_pt2_metadata", &bnnmd::read_pt2_metadata, "path"_a,
        "The metadata of a .pt2 package (bnnmd.txt under 'bnnmd.txt', and AOTInductor's keys), read "
        "without loading its compiled code; the reader the evaluator uses.");
  m.def("parse_metadata",
        [](const std::string& text, const std::string& path) { return metadata_dict(bnnmd::parse_metadata(text, path)); },
        "text"_a, "path"_a = "metadata",
        "The bnnmd.txt metadata of an exported model as a dict (calibration maps as dicts of kind, std, "
        "factor); raises for unknown format versions and missing or malformed keys.");
  m.def("metadata_to_text", &metadata_text, "metadata"_a,
        "The bnnmd.txt text of a metadata dict as parse_metadata returns it (calibration maps as dicts of "
        "kind, std, factor or objects with those attributes; optional keys absent or None when unknown), "
        "floats written exactly; raises ValueError for missing keys and empty or multi-line values.");
}
