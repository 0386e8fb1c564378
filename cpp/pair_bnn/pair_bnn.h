/* -*- c++ -*- ----------------------------------------------------------
   pair_style bnn: a bnnmd Bayesian neural-network potential (k stacked posterior
   samples exported by bnn-export), with per-atom uncertainty for compute bnn/atom.
------------------------------------------------------------------------- */
#ifdef PAIR_CLASS
// clang-format off
PairStyle(bnn,PairBNN);
// clang-format on
#else

#ifndef LMP_PAIR_BNN_H
#define LMP_PAIR_BNN_H

#include "pair.h"

#include <memory>
#include <string>
#include <vector>

#include "bnn_evaluator.h"  // no torch headers

namespace LAMMPS_NS {

class PairBNN : public Pair {
 public:
  PairBNN(class LAMMPS *);
  ~PairBNN() override;
  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  void *extract(const char *, int &) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;
  double memory_usage() override;

  // ---- for compute bnn/atom ----
  void request_uncertainty() { uncertainty_requested = 1; }
  // Per-atom force std (total, epistemic, aleatoric) of local atoms for the current step, and the
  // global vector of compute bnn/atom (kGlobal values): energy std (total, epistemic, aleatoric), the
  // largest per-atom total, the halt threshold, the pressure std (total, epistemic, aleatoric).
  // Collective: reverse-communicates per-sample forces and sums per-sample virials once per step.
  static constexpr int kGlobal = 8;
  void uncertainty(double **peratom, double *global);
  double halt_threshold() const;  // the model's exported halt threshold, LAMMPS force units (0: none)
  bigint last_compute_step() const { return computed_step; }

 protected:
  void allocate();
  void update_uncertainty();
  void check_masses();  // each type's mass against its element's standard mass (init_style)
  // a non-finite number from the model is an error (compute)
  void check_finite(const bnnmd::SampleOutput &, const std::vector<int> &old_of, int nlocal);

  std::vector<std::string> type_element;  // LAMMPS type (1..ntypes) -> element named in pair_coeff
  std::vector<double> warned_mass;        // the mass a type was last warned about (no repeat per run)
  bool rmass_logged = false;              // "per-atom masses: not checked" said once

  // how atoms beyond the rank's own reach the model: "shell" passes the ghost atoms within L x cutoff
  // as nodes (any number of ranks); "images" maps every ghost onto the owned atom it is an image of and
  // gives the edge the image's shift (one rank: N nodes for N atoms, as the ASE calculator); "auto":
  // images on one rank, shell otherwise. use_images is the choice made in init_style.
  std::string ghost_mode;
  bool use_images = false;
  // the model's graph of this step: node positions/types, directed edges (centres, then neighbours),
  // edge shifts, and the LAMMPS index of each node (compute())
  void build_graph_shell(std::vector<double> &pos, std::vector<int64_t> &types, std::vector<int64_t> &edges,
                         std::vector<double> &shifts, std::vector<int> &old_of);
  void build_graph_images(std::vector<double> &pos, std::vector<int64_t> &types, std::vector<int64_t> &edges,
                          std::vector<double> &shifts, std::vector<int> &old_of);
  void edges_within_cutoff(int n_centres, std::vector<int64_t> &centre, std::vector<int64_t> &neigh);
  void check_same_place(int i, int j, double r2);

  std::unique_ptr<bnnmd::Evaluator> evaluator;
  std::string model_file, device_request, device_used;
  std::vector<int> type_map;  // LAMMPS type (1..ntypes) -> model type index
  double cutoff;              // LAMMPS length units
  int num_layers, k;

  int uncertainty_requested;
  bigint computed_step, uncertainty_step;
  std::vector<double> sample_forces;  // [nall * k * 3] per-sample forces (atom-major for comm)
  std::vector<double> sample_sigma;   // [nlocal * k] sigma_F of local atoms
  std::vector<double> sample_virial;  // [k * 9 + k] this rank's per-sample virials, then its sigma_W^2
  std::vector<double> unc_atom;       // [nlocal * 3]
  double unc_global[kGlobal];
  bnnmd::EnergyStats energy_stats;    // of all ranks, this step (compute()); extract("energy_std")
};

}    // namespace LAMMPS_NS

#endif
#endif
