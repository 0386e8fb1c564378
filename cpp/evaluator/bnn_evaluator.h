// bnnmd evaluator core: loads an exported bnnmd model (TorchScript .pth or AOTInductor .pt2, both
// with the same metadata), runs it on
// one configuration and aggregates the k samples into means and uncertainties.
// No LAMMPS dependency: used by the LAMMPS pair style and by the pybind11 module bnnmd._core.
// Torch headers stay out of this header (private implementation).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace bnnmd {

constexpr int kFormatVersion = 2;

// Calibration map of the uncalibrated total std s of an atom (forces) or a frame (energy):
// every variance of that unit is multiplied by factor_at(s)^2. Knots std[] strictly increasing;
// the calibrated std factor_at(s) * s is linear between knots and proportional to s beyond them.
// One knot ("scale"): a constant factor. Python twin: bnnmd.uq.StdMap.
struct StdMap {
  std::string kind = "scale";
  std::vector<double> std{1.0}, factor{1.0};
  double factor_at(double s) const;
  StdMap in_units(double std_factor) const;  // the knots for stds measured x std_factor
  std::string describe() const;
};
StdMap parse_std_map(const std::string& text, const std::string& what);

struct Metadata {
  int format_version = 0;
  std::vector<std::string> type_names;
  double cutoff = 0.0;  // model length unit
  int num_layers = 0;
  int num_samples = 0;
  std::string energy_unit, length_unit, dtype, method, samples_sha256, bnnmd_version, torch_version;
  StdMap calibration_forces, calibration_energy;  // knots in the model's units
  // optional: the per-atom force std at which to halt MD (model force unit; 0 = none) and its rule
  double halt_threshold = 0.0;
  std::string halt_rule;
};

// Per-sample outputs, converted to the evaluator's units, on the CPU in double precision.
struct SampleOutput {
  int k = 0, n = 0;
  std::vector<double> energy;         // [k]
  std::vector<double> energy_std;     // [k]   sigma_E (not calibrated)
  std::vector<double> atomic_energy;  // [k*n]
  std::vector<double> forces;         // [k*n*3] on every atom passed in (ghosts too)
  std::vector<double> forces_std;     // [k*n] sigma_F (not calibrated)
  std::vector<double> virial;         // [k*9] -sum_edges r (x) dE/dr
};

// Mixture moments of energies / forces, calibrated.
struct EnergyStats {
  double mean = 0, std = 0, std_epistemic = 0, std_aleatoric = 0;
};

// The mixture moments of k samples (the one implementation: the evaluator, LAMMPS and Python's
// bnnmd.deploy.energy_stats / force_stats all call these; tests/test_deploy.py holds a NumPy twin).
// Energies: mean and calibrated total/epistemic/aleatoric std of k energies and their sigma_E.
EnergyStats energy_stats(const double* energy, const double* energy_std, int k, const StdMap& calibration);
// Per-atom force mean [n*3] and stds [n] (total, epistemic, aleatoric), calibrated:
// epistemic^2 = mean over x,y,z of the variance of the k forces; aleatoric^2 = mean of
// sigma_F^2; total^2 = their sum; each variance x factor_at(total)^2. forces [k*n*3],
// forces_std [k*n] (nullptr: aleatoric = 0).
void force_stats(const double* forces, const double* forces_std, int k, int n, const StdMap& calibration,
                 double* mean, double* std_total, double* std_epistemic, double* std_aleatoric);

// Graph distance of every atom (0 .. n-1) from the local atoms (0 .. nlocal-1), following the
// directed edges centre -> neighbour (messages flow neighbour -> centre, so an atom h hops away
// reaches a local energy in h layers); atoms more than max_hops away get max_hops + 1. The one
// rule for dropping what no local energy needs: the pair style keeps the atoms within L hops and
// the edges whose centre is within L - 1; the evaluator drops those edges for a .pt2 (the
// TorchScript model does it inside, layer by layer: StochasticNequIP._hops).
std::vector<int> hops_from_local(int n, int nlocal, const int64_t* centre, const int64_t* neighbour,
                                 int64_t n_edges, int max_hops);

// The metadata of an AOTInductor package (.pt2) without loading its compiled code: bnnmd.txt under
// "bnnmd.txt", and AOTInductor's own keys (AOTI_DEVICE_KEY, ...). Throws with the fix for a file
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

// Parse the "key value" lines of bnnmd.txt (throws on missing keys / bad numbers).
Metadata parse_metadata(const std::string& text, const std::string& path);

}  // namespace bnnmd
