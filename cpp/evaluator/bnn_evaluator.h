// bnnmd evaluator core: loads an exported bnnmd model (TorchScript .pth or AOTInductor .pt2, both
// with the same metadata), runs it on
// one configuration and aggregates the k samples into means and uncertainties.
// No LAMMPS dependency: used by the LAMMPS pair style and by the pybind11 module bnnmd._core.
// Torch headers stay out of this header (private implementation).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace bnnmd {

// The version of the metadata format (bnnmd.txt) that this bnnmd writes and reads
// (2: calibration_forces / calibration_energy are maps). Python: bnnmd.posterior.FORMAT_VERSION.
constexpr int kFormatVersion = 2;
// The metadata's name in an exported file: the extra file of a TorchScript model and the metadata key
// of a .pt2 package. Python: bnnmd.posterior.EXTRA_FILE.
inline constexpr const char* kMetadataFile = "bnnmd.txt";
// Two atoms closer than this (length units) are "at the same place": a radius graph needs distinct
// positions (the direction of a zero-length edge is 0/0). The pair style and Python's neighbour list
// (bnnmd.data, through _core.same_place_distance) refuse them.
inline constexpr double kSamePlace = 1e-8;

// The model's outputs: the keys of the TorchScript module's dict and, in this order, the outputs of a
// .pt2 graph (bnnmd.deploy._pt2.OUTPUT_KEYS reads them from here). Output indexes both. A new output
// goes at the end: files exported before it have the outputs before it only (kRequiredOutputs).
enum Output { kTotalEnergy, kAtomicEnergy, kForces, kTotalEnergyStd, kForcesStd, kVirial, kVirialStd, kNumOutputs };
inline constexpr const char* kOutputKeys[kNumOutputs] = {"total_energy", "atomic_energy", "forces", "total_energy_std",
                                                         "forces_std",   "virial",        "virial_std"};
// Every exported file has the first kRequiredOutputs outputs; files exported before virial_std was
// added (a dict without it, a .pt2 with 6 outputs) still run, with virial_std = 0.
inline constexpr int kRequiredOutputs = kVirialStd;

// A double as Python's repr writes it: the shortest text that reads back to the same double
// ("4.0", "0.1", "1e-300", "0.30000000000000004", "1e+16", "inf", "nan"). Exact round trip.
std::string format_double(double x);

// Calibration map of the uncalibrated total std s of an atom (forces) or a frame (energy):
// every variance of that unit is multiplied by factor_at(s)^2. Knots std[] strictly increasing;
// the calibrated std factor_at(s) * s is linear between knots and proportional to s beyond them.
// One knot ("scale"): a constant factor. Python twin: bnnmd.posterior.StdMap.
struct StdMap {
  std::string kind = "scale";
  std::vector<double> std{1.0}, factor{1.0};
  double factor_at(double s) const;
  StdMap in_units(double std_factor) const;  // the knots for stds measured x std_factor
  std::string describe() const;
  // The map as bnnmd.txt stores it, "scale C" or "isotonic S:C S:C ..." (floats exact), read back by
  // parse_std_map. Throws std::invalid_argument for an unknown kind or knots and factors that differ in
  // number (a scale map: one factor).
  std::string to_text() const;
};
StdMap parse_std_map(const std::string& text, const std::string& what);

// The metadata of an exported model (bnnmd.txt): one "key value" line per key, in the order of
// metadata_keys(). Python: bnnmd.posterior.metadata_to_text / parse_metadata.
struct Metadata {
  int format_version = 0;
  std::vector<std::string> type_names;
  double cutoff = 0.0;  // model length unit
  int num_layers = 0;
  int num_samples = 0;
  std::string energy_unit, length_unit, dtype;
  StdMap calibration_forces, calibration_energy;  // knots in the model's units
  std::string method, samples_sha256, bnnmd_version, torch_version;
  // optional: the per-atom force std at which to halt MD (model force unit) and the rule that gave it
  std::optional<double> halt_threshold;
  std::optional<std::string> halt_rule;
};

// The value of one metadata key, and the definition of the keys: the one list that parse_metadata,
// metadata_to_text and the Python bindings follow. A new key: a Metadata member and a line in
// metadata_keys() (bnn_evaluator.cpp).
using MetadataValue = std::variant<int, double, std::string, std::vector<std::string>, StdMap>;
struct MetadataKey {
  std::string name;
  bool optional;        // written only when set (a std::optional member)
  MetadataValue blank;  // a default value of the key's type (the type is blank.index())
  std::optional<MetadataValue> (*get)(const Metadata&);  // nullopt: an optional key not set
  void (*set)(Metadata&, MetadataValue);                 // the value must hold the key's type
};
// The required keys in the order written, then the optional ones.
const std::vector<MetadataKey>& metadata_keys();

// The metadata from values by key (a key's value must have its type: std::invalid_argument
// otherwise); keys not listed in metadata_keys() are ignored. Throws std::invalid_argument naming the
// required keys that values lacks ("metadata lacks cutoff, dtype"). No check of the values themselves:
// parse_metadata makes those.
Metadata metadata_from_values(const std::map<std::string, MetadataValue>& values);
// The values of m by key, in written order (optional keys only when set).
std::vector<std::pair<std::string, MetadataValue>> metadata_values(const Metadata& m);

// bnnmd.txt: the "key value" lines of m, each ending in a newline, that parse_metadata reads back to m
// (doubles written exactly, as by format_double). Throws std::invalid_argument for a value that is
// empty or more than one line, a type name that is empty or holds whitespace, or a malformed map.
std::string metadata_to_text(const Metadata& m);

// Per-sample outputs, converted to the evaluator's units, on the CPU in double precision.
struct SampleOutput {
  int k = 0, n = 0;
  std::vector<double> energy;         // [k]
  std::vector<double> energy_std;     // [k]   sigma_E (not calibrated)
  std::vector<double> atomic_energy;  // [k*n]
  std::vector<double> forces;         // [k*n*3] on every atom passed in (ghosts too)
  std::vector<double> forces_std;     // [k*n] sigma_F (not calibrated)
  std::vector<double> virial;         // [k*9] -sum_edges r (x) dE/dr
  std::vector<double> virial_std;     // [k]   sigma_W, the std of each virial component (not calibrated;
                                      //       0: a model without a stress head, or a file exported before it)
};

// Mixture moments of energies, calibrated (and of the virial's isotropic part, VirialStats).
struct EnergyStats {
  double mean = 0, std = 0, std_epistemic = 0, std_aleatoric = 0;
};

// The mixture moments of k samples (the one implementation: the evaluator, LAMMPS and Python's
// bnnmd.posterior.energy_stats / force_stats / virial_stats all call these; tests/test_deploy.py holds
// a NumPy twin).
// Energies: mean and calibrated total/epistemic/aleatoric std of k energies and their sigma_E.
EnergyStats energy_stats(const double* energy, const double* energy_std, int k, const StdMap& calibration);
// Per-atom force mean [n*3] and stds [n] (total, epistemic, aleatoric), calibrated:
// epistemic^2 = mean over x,y,z of the variance of the k forces; aleatoric^2 = mean of
// sigma_F^2; total^2 = their sum; each variance x factor_at(total)^2. forces [k*n*3],
// forces_std [k*n] (nullptr: aleatoric = 0).
void force_stats(const double* forces, const double* forces_std, int k, int n, const StdMap& calibration,
                 double* mean, double* std_total, double* std_epistemic, double* std_aleatoric);

// Mixture moments of k virials W_s (energy units; W = -sum_edges r (x) dE/dr = -V x stress) and of their
// isotropic part tr(W)/3 (= P_virial x V), with the model's sigma_W,s (one std shared by the 9 components,
// independent in the likelihood). Not calibrated: there is no calibration map for stress.
struct VirialStats {
  double mean[9] = {}, std[9] = {}, std_epistemic[9] = {}, std_aleatoric[9] = {};  // row-major 3 x 3
  EnergyStats pressure_volume;  // of tr(W)/3: mean and total / epistemic / aleatoric std (energy units)
};
// Per component: epistemic^2 = the variance (ddof 0) of the k virials, aleatoric^2 = mean_s sigma_W,s^2,
// total^2 = their sum. tr(W)/3: epistemic^2 = the variance of the k values tr(W_s)/3, aleatoric^2 =
// mean_s sigma_W,s^2 / 3. virial [k*9] (row-major 3 x 3 per sample), virial_std [k] (nullptr: 0).
VirialStats virial_stats(const double* virial, const double* virial_std, int k);

// Graph distance of every atom (0 .. n-1) from the local atoms (0 .. nlocal-1), following the
// directed edges centre -> neighbour (messages flow neighbour -> centre, so an atom h hops away
// reaches a local energy in h layers); atoms more than max_hops away get max_hops + 1. The one
// rule for dropping what no local energy needs: the pair style keeps the atoms within L hops and
// the edges whose centre is within L - 1; the evaluator drops those edges for a .pt2 (the
// TorchScript model does it inside, layer by layer: StochasticNequIP._hops).
std::vector<int> hops_from_local(int n, int nlocal, const int64_t* centre, const int64_t* neighbour,
                                 int64_t n_edges, int max_hops);

// The metadata of an AOTInductor package (.pt2) without loading its compiled code: bnnmd.txt under
// kMetadataFile, and AOTInductor's own keys (AOTI_DEVICE_KEY, ...). Throws with the fix for a file
// that is not a package this torch can read.
std::unordered_map<std::string, std::string> read_pt2_metadata(const std::string& path);

// The CPU features that a .pt2 package's kernels were compiled for (AOTInductor's AOTI_CPU_ISA,
// e.g. "AVX512 AVX512_VNNI AMX_TILE") and this CPU lacks, comma-separated; "" when it has them
// all. Checked: AVX512 (avx512f/dq/vl/bw, fma), AVX2 (avx2, fma), AVX512_VNNI, and any ISA of
// another architecture (NEON, SVE, VSX, ZVECTOR on x86; AVX* elsewhere). AMX_TILE is not checked:
// inductor uses it only for bf16/int8 matrix products, which a float32/float64 model never has.
std::string missing_cpu_features(const std::string& isa);

class Backend;  // one per export format (bnn_evaluator.cpp)

class Evaluator {
 public:
  // path: a TorchScript file, or an AOTInductor package when it ends in .pt2.
  // energy_unit/length_unit: the units of inputs and outputs ("" = the model's own).
  // device: "cpu", "cuda", "cuda:N" or "auto" (cuda when torch sees a GPU).
  Evaluator(const std::string& path, const std::string& device = "cpu",
            const std::string& energy_unit = "", const std::string& length_unit = "");
  ~Evaluator();
  Evaluator(const Evaluator&) = delete;
  Evaluator& operator=(const Evaluator&) = delete;

  const Metadata& metadata() const;
  std::string device() const;
  const std::string& format() const;  // "torchscript" (.pth and any other name) or "pt2" (.pt2)
  double cutoff() const;  // in the evaluator's length unit
  const std::string& energy_unit() const;
  const std::string& length_unit() const;
  // the exported halt threshold of the per-atom total force std, in the evaluator's force unit
  // (0 when the model was exported without one)
  double halt_threshold() const;

  // pos [n*3], types [n] (indices into type_names), edges [2*n_edges] (centres, then
  // neighbours), shifts [n_edges*3]; atoms >= nlocal are ghosts (forces, no energy).
  SampleOutput evaluate(const double* pos, const int64_t* types, int n, int nlocal,
                        const int64_t* edges, const double* shifts, int64_t n_edges) const;

  // Mixture moments of the k energies, with the model's energy calibration (in these units) applied.
  EnergyStats energy_stats(const double* energy, const double* energy_std, int k) const;

  // bnnmd::force_stats with the model's force calibration (in these units); forces [k*n*3] summed
  // over ranks for ghosts first.
  void force_stats(const double* forces, const double* forces_std, int k, int n, double* mean,
                   double* std_total, double* std_epistemic, double* std_aleatoric) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The device string for a process: "cuda"/"auto" become "cuda:<local_rank % visible GPUs>"
// (one GPU per node-local MPI rank) or "cpu" for auto without a GPU; others pass through.
std::string resolve_device(const std::string& device, int local_rank);

// Parse the "key value" lines of bnnmd.txt (metadata_to_text's format). Throws std::runtime_error,
// naming path and the fix, for another format version, missing keys, malformed values and
// inconsistent metadata. Unknown keys are ignored.
Metadata parse_metadata(const std::string& text, const std::string& path);

}  // namespace bnnmd
