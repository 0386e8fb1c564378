// The C++ twin of bnnmd/units.py: the same factors, digit for digit
// (tests/test_deploy.py compares the two through bnnmd._core.units_table()).
#pragma once

#include <map>
#include <stdexcept>
#include <string>

namespace bnnmd {

// value in the named unit x factor = value in eV (energies) or Angstrom (lengths)
inline const std::map<std::string, double>& energy_units() {
  static const std::map<std::string, double> table = {
      {"eV", 1.0},
      {"meV", 1e-3},
      {"kcal/mol", 0.04336410390059322},
      {"kJ/mol", 0.010364269574711572},
      {"Hartree", 27.211386024367243},
  };
  return table;
}

inline const std::map<std::string, double>& length_units() {
  static const std::map<std::string, double> table = {
      {"A", 1.0},
      {"nm", 10.0},
      {"Bohr", 0.5291772105638411},
  };
  return table;
}

inline double unit_factor(const std::map<std::string, double>& table, const std::string& from,
                          const std::string& to, const char* kind) {
  auto f = table.find(from), t = table.find(to);
  if (f == table.end() || t == table.end()) {
    std::string known;
    for (const auto& kv : table) known += (known.empty() ? "" : ", ") + kv.first;
    throw std::runtime_error(std::string("unknown ") + kind + " unit '" +
                             (f == table.end() ? from : to) + "'; supported: " + known);
  }
  return f->second / t->second;
}

inline double energy_factor(const std::string& from, const std::string& to) {
  return unit_factor(energy_units(), from, to, "energy");
}
inline double length_factor(const std::string& from, const std::string& to) {
  return unit_factor(length_units(), from, to, "length");
}

}  // namespace bnnmd
