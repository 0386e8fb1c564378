/* -*- c++ -*- ----------------------------------------------------------
   compute ID group bnn/atom: per-atom force uncertainty of pair_style bnn
   columns: 1 total, 2 epistemic, 3 aleatoric force std (force units, per component)
   global vector: 1 energy std, 2 its epistemic part, 3 its aleatoric part,
                  4 the largest per-atom total force std, 5 the model's halt threshold,
                  6 the std of the model's virial pressure, 7 its epistemic part, 8 its aleatoric
                  part (pressure units: std of tr(W) / (3 V) x nktv2p)
------------------------------------------------------------------------- */
#ifdef COMPUTE_CLASS
// clang-format off
ComputeStyle(bnn/atom,ComputeBNNAtom);
// clang-format on
#else

#ifndef LMP_COMPUTE_BNN_ATOM_H
#define LMP_COMPUTE_BNN_ATOM_H

#include "compute.h"

namespace LAMMPS_NS {

class ComputeBNNAtom : public Compute {
 public:
  ComputeBNNAtom(class LAMMPS *, int, char **);
  ~ComputeBNNAtom() override;
  void init() override;
  void compute_peratom() override;
  void compute_vector() override;
  double memory_usage() override;

 private:
  int nmax;
  double **unc;
  class PairBNN *pair;
};

}    // namespace LAMMPS_NS

#endif
#endif
