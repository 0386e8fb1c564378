#include "compute_bnn_atom.h"

#include "atom.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "pair_bnn.h"
#include "update.h"

using namespace LAMMPS_NS;

ComputeBNNAtom::ComputeBNNAtom(LAMMPS *lmp, int narg, char **arg) :
    Compute(lmp, narg, arg), nmax(0), unc(nullptr), pair(nullptr)
{
  if (narg != 3) error->all(FLERR, "Illegal compute bnn/atom command: expected compute ID group bnn/atom");
  peratom_flag = 1;
  size_peratom_cols = 3;
  vector_flag = 1;
  size_vector = PairBNN::kGlobal;
  extvector = 0;
  vector = new double[PairBNN::kGlobal];
  for (int c = 0; c < PairBNN::kGlobal; c++) vector[c] = 0.0;
  // ask the pair style to keep per-sample forces from the first step on
  pair = dynamic_cast<PairBNN *>(force->pair_match("bnn", 1));
  if (pair) pair->request_uncertainty();
}

ComputeBNNAtom::~ComputeBNNAtom()
{
  memory->destroy(unc);
  delete[] vector;
}

void ComputeBNNAtom::init()
{
  pair = dynamic_cast<PairBNN *>(force->pair_match("bnn", 1));
  if (!pair) error->all(FLERR, "compute bnn/atom requires pair_style bnn");
  pair->request_uncertainty();
}

void ComputeBNNAtom::compute_peratom()
{
  invoked_peratom = update->ntimestep;
  if (atom->nmax > nmax) {
    memory->destroy(unc);
    nmax = atom->nmax;
    memory->create(unc, nmax, 3, "bnn/atom:unc");
    array_atom = unc;
  }
  pair->uncertainty(unc, nullptr);
  int *mask = atom->mask;
  for (int i = 0; i < atom->nlocal; i++)
    if (!(mask[i] & groupbit)) unc[i][0] = unc[i][1] = unc[i][2] = 0.0;
}

void ComputeBNNAtom::compute_vector()
{
  invoked_vector = update->ntimestep;
  pair->uncertainty(nullptr, vector);
}

double ComputeBNNAtom::memory_usage()
{
  return 3.0 * nmax * sizeof(double);
}
