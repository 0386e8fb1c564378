/* ----------------------------------------------------------------------
   pair_style bnn: see pair_bnn.h and docs/lammps.md.
   Exact under MPI for a model with L message-passing layers: the ghost cutoff is
   L x cutoff (+ skin), the graph spans local + ghost atoms, energies count local atoms
   only, forces on ghosts are reverse-communicated by LAMMPS (newton pair on), and the
   k per-sample forces are reverse-communicated before their variance is taken.
------------------------------------------------------------------------- */

#include "pair_bnn.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "bnn_elements.h"
#include "bnn_evaluator.h"

using namespace LAMMPS_NS;

namespace {
// LAMMPS unit style -> (energy, length) unit names of bnnmd's units table (bnn_units.h)
bool lammps_units(const std::string& style, std::string& energy, std::string& length) {
  if (style == "real") {
    energy = "kcal/mol";
    length = "A";
    return true;
  }
  if (style == "metal") {
    energy = "eV";
    length = "A";
    return true;
  }
  return false;
}


const char *nonfinite(double v) { return std::isnan(v) ? "NaN" : (v > 0 ? "+inf" : "-inf"); }
}  // namespace

PairBNN::PairBNN(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  centroidstressflag = CENTROID_NOTAVAIL;
  no_virial_fdotr_compute = 1;  // the virial comes from the edge gradients (exact with ghosts)
  cutoff = 0.0;
  num_layers = 0;
  k = 0;
  device_request = "cpu";
  ghost_mode = "auto";
  uncertainty_requested = 0;
  computed_step = uncertainty_step = -1;
  for (double &g : unc_global) g = 0.0;
  std::string eu, lu;
  if (!lammps_units(update->unit_style, eu, lu))
    error->all(FLERR, std::string("Pair style bnn does not support units ") + update->unit_style +
                          "; use units real or metal (the model's units are converted)");
}

PairBNN::~PairBNN()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairBNN::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  for (int i = 1; i < n; i++)
    for (int j = i; j < n; j++) setflag[i][j] = 0;
}

/* pair_style bnn [device cpu|cuda|auto] [ghosts auto|images|shell] */
void PairBNN::settings(int narg, char **arg)
{
  int iarg = 0;
  while (iarg < narg) {
    if (strcmp(arg[iarg], "device") == 0) {
      if (iarg + 1 >= narg) error->all(FLERR, "Illegal pair_style bnn command: device needs cpu, cuda or auto");
      device_request = arg[iarg + 1];
      if (device_request != "cpu" && device_request != "cuda" && device_request != "auto")
        error->all(FLERR, "Illegal pair_style bnn command: device must be cpu, cuda or auto, not " +
                              device_request);
      iarg += 2;
    } else if (strcmp(arg[iarg], "ghosts") == 0) {
      if (iarg + 1 >= narg)
        error->all(FLERR, "Illegal pair_style bnn command: ghosts needs auto, images or shell");
      ghost_mode = arg[iarg + 1];
      if (ghost_mode != "auto" && ghost_mode != "images" && ghost_mode != "shell")
        error->all(FLERR, "Illegal pair_style bnn command: ghosts must be auto, images or shell, not " + ghost_mode);
      iarg += 2;
    } else {
      error->all(FLERR, std::string("Illegal pair_style bnn command: unknown keyword ") + arg[iarg] +
                            "; expected: pair_style bnn [device cpu|cuda|auto] [ghosts auto|images|shell]");
    }
  }
}

/* pair_coeff * * model.pth El1 El2 ... (one element per LAMMPS type) */
void PairBNN::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg != 3 + ntypes)
    error->all(FLERR, "Incorrect args for pair_coeff bnn: expected pair_coeff * * model.pth <element for each "
                      "of the " + std::to_string(ntypes) + " atom types>, got " + std::to_string(narg - 3) +
                      " element(s)");
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "Incorrect args for pair_coeff bnn: the first two arguments must be * *");

  std::string eu, lu;
  lammps_units(update->unit_style, eu, lu);
  model_file = arg[2];
  // one GPU per node-local rank
  MPI_Comm node;
  int local_rank = 0;
  MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->me, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local_rank);
  MPI_Comm_free(&node);
  try {
    device_used = bnnmd::resolve_device(device_request, local_rank);
    evaluator.reset(new bnnmd::Evaluator(model_file, device_used, eu, lu));
  } catch (const std::exception &e) {
    error->all(FLERR, std::string("pair_style bnn: ") + e.what());
  }
  const bnnmd::Metadata &meta = evaluator->metadata();
  cutoff = evaluator->cutoff();
  num_layers = meta.num_layers;
  k = meta.num_samples;

  type_map.assign(ntypes + 1, -1);
  type_element.assign(ntypes + 1, "");
  warned_mass.assign(ntypes + 1, 0.0);
  std::string known;
  for (const auto &t : meta.type_names) known += (known.empty() ? "" : " ") + t;
  for (int t = 1; t <= ntypes; t++) {
    const std::string el = arg[2 + t];
    type_element[t] = el;
    for (size_t m = 0; m < meta.type_names.size(); m++)
      if (meta.type_names[m] == el) type_map[t] = static_cast<int>(m);
    if (type_map[t] < 0)
      error->all(FLERR, "pair_coeff bnn: element " + el + " (atom type " + std::to_string(t) +
                            ") is not known to the model " + model_file + ", which has: " + known);
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;

  if (comm->me == 0) {
    std::string map;
    for (int t = 1; t <= ntypes; t++) map += " " + std::to_string(t) + "->" + arg[2 + t];
    utils::logmesg(lmp,
                   "pair_style bnn: {} ({} {}, k = {} samples, {} layers, cutoff {:.4g} {}, model units {} / {}, "
                   "calibration forces {}, energy {}) on {}; types{}\n",
                   model_file, evaluator->format(), meta.method, k, num_layers, cutoff, lu, meta.energy_unit, meta.length_unit,
                   meta.calibration_forces.describe(), meta.calibration_energy.describe(), device_used, map);
  }
}

void PairBNN::init_style()
{
  if (!evaluator) error->all(FLERR, "pair_style bnn needs a pair_coeff * * model.pth <elements> command");
  if (force->newton_pair == 0) error->all(FLERR, "Pair style bnn requires newton pair on");
  if (atom->tag_enable == 0) error->all(FLERR, "Pair style bnn requires atom IDs");
  if (ghost_mode == "images" && comm->nprocs > 1)
    error->all(FLERR, "pair_style bnn ghosts images needs one MPI rank (every ghost an image of an owned atom), "
                      "this run has {}; use ghosts auto or shell", comm->nprocs);
  const bool images = ghost_mode == "images" || (ghost_mode == "auto" && comm->nprocs == 1);
  if (images) {
    // one rank: the model's graph is the local atoms with periodic shifts; the neighbours within one
    // cutoff are all it needs (the standard ghost cutoff)
    neighbor->add_request(this, NeighConst::REQ_FULL);
    if (comm->me == 0 && !use_images)
      utils::logmesg(lmp, "pair_style bnn: ghosts images: each ghost is mapped onto the atom it is an image of "
                          "(edges carry the periodic shift; the model sees {} nodes, not the ghost shell)\n",
                     atom->natoms);
  } else {
    neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
    // message passing over L layers needs every atom within L x cutoff of a local atom
    const double needed = num_layers * cutoff + neighbor->skin;
    if (comm->cutghostuser < needed) {
      comm->cutghostuser = needed;
      if (comm->me == 0)
        utils::logmesg(lmp, "pair_style bnn: ghost cutoff set to {:.4g} ({} layers x cutoff + skin)\n", needed,
                       num_layers);
    }
  }
  use_images = images;
  comm_reverse = 3 * k;
  check_masses();
}

/* Each type's mass against the standard mass of the element pair_coeff gives it (masses may be
   set after pair_coeff, so at init). A mass nearer another element named in pair_coeff is an
   error (the elements are in another order than the types); a mass more than 0.5 g/mol from its
   element's is a warning (isotopes such as deuterium are legitimate). real and metal, the only
   units pair_style bnn accepts, both measure mass in g/mol, the unit of the element table.
   Per-atom masses (atom styles with rmass) are not checked: they need not be element masses. */
void PairBNN::check_masses()
{
  const int ntypes = atom->ntypes;
  if (atom->rmass_flag) {
    if (comm->me == 0 && !rmass_logged)
      utils::logmesg(lmp, "pair_style bnn: per-atom masses (rmass): the check of type masses against "
                          "the elements of pair_coeff is skipped\n");
    rmass_logged = true;
    return;
  }
  if (!atom->mass || !atom->mass_setflag) return;
  std::vector<std::string> named;  // the elements of pair_coeff, once each
  for (int t = 1; t <= ntypes; t++)
    if (std::find(named.begin(), named.end(), type_element[t]) == named.end() &&
        bnnmd::standard_mass(type_element[t]) > 0)
      named.push_back(type_element[t]);
  std::vector<std::string> suggested(type_element);
  std::string mismatch;
  std::vector<int> to_warn;
  for (int t = 1; t <= ntypes; t++) {
    const std::string &el = type_element[t];
    const double own = bnnmd::standard_mass(el);
    if (!atom->mass_setflag[t] || own <= 0) continue;
    const double mass = atom->mass[t];
    double best = std::fabs(mass - own);
    for (const std::string &other : named) {
      const double d = std::fabs(mass - bnnmd::standard_mass(other));
      if (d < best) {
        best = d;
        suggested[t] = other;
      }
    }
    if (suggested[t] != el)
      mismatch += fmt::format("{}atom type {} has mass {:.6g}, the mass of {} ({:.6g}), but pair_coeff gives it {} "
                              "({:.6g})", mismatch.empty() ? "" : "; ", t, mass, suggested[t],
                              bnnmd::standard_mass(suggested[t]), el, own);
    else if (std::fabs(mass - own) > 0.5 && mass != warned_mass[t])
      to_warn.push_back(t);
  }
  if (!mismatch.empty()) {
    std::string fix;
    for (int t = 1; t <= ntypes; t++) fix += " " + suggested[t];
    error->all(FLERR, "pair_style bnn: {}. The elements of pair_coeff must follow the atom types: "
                      "pair_coeff * * {}{} (or correct the masses)", mismatch, model_file, fix);
  }
  for (int t : to_warn) {
    const std::string &el = type_element[t];
    if (comm->me == 0)
      error->warning(FLERR, "pair_style bnn: atom type {} ({}) has mass {:.6g}, {:.3g} g/mol from the standard "
                            "mass of {} ({:.6g}): fine for an isotope (deuterium: 2.014), otherwise check the masses",
                     t, el, atom->mass[t], std::fabs(atom->mass[t] - bnnmd::standard_mass(el)), el,
                     bnnmd::standard_mass(el));
    warned_mass[t] = atom->mass[t];
  }
}

double PairBNN::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "All pair coeffs are not set");
  return cutoff;
}

/* The directed edges (centre i, neighbour j) shorter than the model's cutoff, over the first n_centres
   atoms of the neighbour list (its locals, then its ghosts), j as LAMMPS indexes it; two atoms at the
   same place stop the run. */
void PairBNN::edges_within_cutoff(int n_centres, std::vector<int64_t> &centre, std::vector<int64_t> &neigh)
{
  double **x = atom->x;
  const double cutsq_model = cutoff * cutoff;
  centre.clear();
  neigh.clear();
  for (int ii = 0; ii < n_centres; ii++) {
    const int i = list->ilist[ii];
    const int *jlist = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      const double r2 = dx * dx + dy * dy + dz * dz;
      check_same_place(i, j, r2);
      if (r2 < cutsq_model) {
        centre.push_back(i);
        neigh.push_back(j);
      }
    }
  }
}

void PairBNN::check_same_place(int i, int j, double r2)
{
  if (r2 < bnnmd::kSamePlace * bnnmd::kSamePlace)
    error->one(FLERR, "pair_style bnn: atoms {} and {} (atom IDs{}) are at the same place (distance {:.3g}) "
                      "at step {}: a radius graph needs distinct positions; remove the duplicate atom "
                      "(e.g. delete_atoms overlap 0.1 all all)",
               atom->tag[i], atom->tag[j],
               j >= atom->nlocal ? ", the second a periodic image or another rank's atom" : "", std::sqrt(r2),
               update->ntimestep);
}

/* ghosts shell: directed edges (centre i, neighbour j) over local and ghost atoms; ghosts sit at their
   image positions, so every shift is zero. Only what the local energies depend on is kept: atoms within
   L hops of a local atom (graph distance, breadth first) and the edges into atoms within L - 1 hops.
   Locals keep indices 0 .. nlocal-1; the kept ghosts follow. */
void PairBNN::build_graph_shell(std::vector<double> &pos, std::vector<int64_t> &types,
                                std::vector<int64_t> &edges, std::vector<double> &shifts, std::vector<int> &old_of)
{
  double **x = atom->x;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  std::vector<int64_t> centre, neigh;
  edges_within_cutoff(list->inum + list->gnum, centre, neigh);
  const std::vector<int> hop = bnnmd::hops_from_local(nall, nlocal, centre.data(), neigh.data(),
                                                      static_cast<int64_t>(centre.size()), num_layers);
  std::vector<int> new_of(nall, -1);
  old_of.clear();
  for (int i = 0; i < nall; i++)
    if (hop[i] <= num_layers) {
      new_of[i] = static_cast<int>(old_of.size());
      old_of.push_back(i);
    }
  const int m = static_cast<int>(old_of.size());
  pos.resize(3 * static_cast<size_t>(m));
  types.resize(m);
  for (int a = 0; a < m; a++) {
    const int i = old_of[a];
    for (int c = 0; c < 3; c++) pos[3 * a + c] = x[i][c];
    types[a] = type_map[atom->type[i]];
  }
  std::vector<int64_t> kept_neigh;
  edges.clear();
  for (size_t e = 0; e < centre.size(); e++)
    if (hop[centre[e]] <= num_layers - 1) {
      edges.push_back(new_of[centre[e]]);
      kept_neigh.push_back(new_of[neigh[e]]);
    }
  edges.insert(edges.end(), kept_neigh.begin(), kept_neigh.end());
  shifts.assign(3 * kept_neigh.size(), 0.0);
}

/* ghosts images (one rank): the nodes are the local atoms; an edge to a ghost goes to the owned atom
   it is an image of (atom->map of its tag), with the shift x_ghost - x_owner, as the ASE calculator's
   periodic edges. An atom may neighbour several images of another (or of itself) in a small box. */
void PairBNN::build_graph_images(std::vector<double> &pos, std::vector<int64_t> &types,
                                 std::vector<int64_t> &edges, std::vector<double> &shifts, std::vector<int> &old_of)
{
  double **x = atom->x;
  const int nlocal = atom->nlocal;
  std::vector<int64_t> neigh;
  edges_within_cutoff(list->inum, edges, neigh);
  shifts.resize(3 * neigh.size());
  for (size_t e = 0; e < neigh.size(); e++) {
    const int j = static_cast<int>(neigh[e]);
    int o = j;
    if (j >= nlocal) {
      o = atom->map(atom->tag[j]);
      if (o < 0 || o >= nlocal)
        error->one(FLERR, "pair_style bnn ghosts images: atom {} has no owned copy on this rank; use ghosts "
                          "shell", atom->tag[j]);
    }
    for (int c = 0; c < 3; c++) shifts[3 * e + c] = x[j][c] - x[o][c];
    neigh[e] = o;
  }
  edges.insert(edges.end(), neigh.begin(), neigh.end());
  old_of.resize(nlocal);
  pos.resize(3 * static_cast<size_t>(nlocal));
  types.resize(nlocal);
  for (int i = 0; i < nlocal; i++) {
    old_of[i] = i;
    for (int c = 0; c < 3; c++) pos[3 * i + c] = x[i][c];
    types[i] = type_map[atom->type[i]];
  }
}

void PairBNN::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (vflag_atom) error->all(FLERR, "pair_style bnn does not compute per-atom virials");

  double **f = atom->f;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;

  std::vector<double> pos, shifts;
  std::vector<int64_t> types, edges;
  std::vector<int> old_of;  // the LAMMPS index of each node
  if (use_images)
    build_graph_images(pos, types, edges, shifts, old_of);
  else
    build_graph_shell(pos, types, edges, shifts, old_of);
  const int m = static_cast<int>(old_of.size());
  const int64_t ne = static_cast<int64_t>(edges.size() / 2);

  bnnmd::SampleOutput s;
  try {
    s = evaluator->evaluate(pos.data(), types.data(), m, nlocal, edges.data(), shifts.data(), ne);
  } catch (const std::exception &e) {
    error->one(FLERR, std::string("pair_style bnn: evaluation failed: ") + e.what());
  }
  check_finite(s, old_of, nlocal);

  // mean forces on local and ghost atoms (LAMMPS reverse-communicates the ghosts' share)
  for (int a = 0; a < m; a++)
    for (int c = 0; c < 3; c++) {
      double mean = 0.0;
      for (int q = 0; q < k; q++) mean += s.forces[(static_cast<size_t>(q) * m + a) * 3 + c];
      f[old_of[a]][c] += mean / k;
    }
  if (eflag_global) {
    double e = 0.0;
    for (int q = 0; q < k; q++) e += s.energy[q];
    eng_vdwl += e / k;
  }
  if (eflag_atom)
    for (int i = 0; i < nlocal; i++) {  // locals keep their index
      double e = 0.0;
      for (int q = 0; q < k; q++) e += s.atomic_energy[static_cast<size_t>(q) * m + i];
      eatom[i] += e / k;
    }
  if (vflag_global) {
    // virial W = -sum_edges r (x) dE/dr of the mean, LAMMPS order xx yy zz xy xz yz
    static const int idx[6] = {0, 4, 8, 1, 2, 5};
    for (int c = 0; c < 6; c++) {
      double w = 0.0;
      for (int q = 0; q < k; q++) w += s.virial[q * 9 + idx[c]];
      virial[c] += w / k;
    }
  }

  if (uncertainty_requested) {
    // keep per-sample forces (atom-major, for the reverse communication) and local sigmas
    sample_forces.assign(static_cast<size_t>(nall) * k * 3, 0.0);
    for (int a = 0; a < m; a++)
      for (int q = 0; q < k; q++)
        for (int c = 0; c < 3; c++)
          sample_forces[(static_cast<size_t>(old_of[a]) * k + q) * 3 + c] =
              s.forces[(static_cast<size_t>(q) * m + a) * 3 + c];
    sample_sigma.resize(static_cast<size_t>(nlocal) * k);
    for (int i = 0; i < nlocal; i++)
      for (int q = 0; q < k; q++)
        sample_sigma[static_cast<size_t>(i) * k + q] = s.forces_std[static_cast<size_t>(q) * m + i];
    // this rank's share of every sample's virial and of sigma_W^2 (sums over its local atoms' energies)
    sample_virial.assign(s.virial.begin(), s.virial.end());
    for (int q = 0; q < k; q++) sample_virial.push_back(s.virial_std[q] * s.virial_std[q]);
  }
  // the energy's mixture moments every step (2k numbers over all ranks), so extract("energy_std")
  // is this step's value with or without compute bnn/atom
  {
    std::vector<double> var(k), e(k), v(k);
    for (int q = 0; q < k; q++) var[q] = s.energy_std[q] * s.energy_std[q];
    MPI_Allreduce(s.energy.data(), e.data(), k, MPI_DOUBLE, MPI_SUM, world);
    MPI_Allreduce(var.data(), v.data(), k, MPI_DOUBLE, MPI_SUM, world);
    for (double &x : v) x = std::sqrt(x);
    energy_stats = evaluator->energy_stats(e.data(), v.data(), k);
  }
  computed_step = update->ntimestep;
  uncertainty_step = -1;
}

/* Every number of the model that LAMMPS uses must be finite: a NaN would pass through the means and
   make a max over atoms (fix halt on c_unc[4]) skip it. Checked on each rank for its own samples. */
void PairBNN::check_finite(const bnnmd::SampleOutput &s, const std::vector<int> &old_of, int nlocal)
{
  const int m = static_cast<int>(old_of.size());
  auto stop = [&](const std::string &what, double v) {
    error->one(FLERR, "pair_style bnn: the model produced {} ({}) at step {}; the run cannot go on (look for "
                      "atoms that overlap or flew apart in the last steps, or a model with non-finite weights)",
               nonfinite(v), what, update->ntimestep);
  };
  for (int q = 0; q < k; q++) {
    if (!std::isfinite(s.energy[q])) stop(fmt::format("energy of sample {}", q), s.energy[q]);
    if (!std::isfinite(s.energy_std[q])) stop(fmt::format("energy std of sample {}", q), s.energy_std[q]);
    if (!std::isfinite(s.virial_std[q])) stop(fmt::format("virial std of sample {}", q), s.virial_std[q]);
    for (int c = 0; c < 9; c++)
      if (!std::isfinite(s.virial[q * 9 + c])) stop(fmt::format("virial of sample {}", q), s.virial[q * 9 + c]);
    for (int a = 0; a < m; a++) {
      for (int c = 0; c < 3; c++) {
        const double v = s.forces[(static_cast<size_t>(q) * m + a) * 3 + c];
        if (!std::isfinite(v)) stop(fmt::format("force of sample {} on atom {}", q, atom->tag[old_of[a]]), v);
      }
      if (a < nlocal) {  // a ghost's own energy and sigma_F are not used
        const double e = s.atomic_energy[static_cast<size_t>(q) * m + a];
        const double sd = s.forces_std[static_cast<size_t>(q) * m + a];
        if (!std::isfinite(e)) stop(fmt::format("energy of sample {} of atom {}", q, atom->tag[a]), e);
        if (!std::isfinite(sd)) stop(fmt::format("force std of sample {} of atom {}", q, atom->tag[a]), sd);
      }
    }
  }
}

int PairBNN::pack_reverse_comm(int n, int first, double *buf)
{
  int m = 0;
  const int last = first + n;
  for (int i = first; i < last; i++)
    for (int c = 0; c < 3 * k; c++) buf[m++] = sample_forces[static_cast<size_t>(i) * k * 3 + c];
  return m;
}

void PairBNN::unpack_reverse_comm(int n, int *list_, double *buf)
{
  int m = 0;
  for (int ii = 0; ii < n; ii++) {
    const int j = list_[ii];
    for (int c = 0; c < 3 * k; c++) sample_forces[static_cast<size_t>(j) * k * 3 + c] += buf[m++];
  }
}

void PairBNN::update_uncertainty()
{
  if (uncertainty_step == update->ntimestep) return;
  if (!uncertainty_requested || computed_step != update->ntimestep)
    error->all(FLERR, "compute bnn/atom: pair_style bnn has no results for this step (the compute must be "
                      "defined before the run, and used on steps where forces are computed)");
  // sum the ghosts' per-sample forces into their owners, then take the variance
  comm->reverse_comm(this);
  const int nlocal = atom->nlocal;
  std::vector<double> f(static_cast<size_t>(k) * nlocal * 3), sig(static_cast<size_t>(k) * nlocal);
  for (int i = 0; i < nlocal; i++)
    for (int q = 0; q < k; q++) {
      for (int c = 0; c < 3; c++)
        f[(static_cast<size_t>(q) * nlocal + i) * 3 + c] = sample_forces[(static_cast<size_t>(i) * k + q) * 3 + c];
      sig[static_cast<size_t>(q) * nlocal + i] = sample_sigma[static_cast<size_t>(i) * k + q];
    }
  std::vector<double> mean(3 * static_cast<size_t>(nlocal)), tot(nlocal), epi(nlocal), alea(nlocal);
  evaluator->force_stats(f.data(), sig.data(), k, nlocal, mean.data(), tot.data(), epi.data(), alea.data());
  unc_atom.resize(3 * static_cast<size_t>(nlocal));
  double local_max = 0.0;
  for (int i = 0; i < nlocal; i++) {
    unc_atom[3 * i] = tot[i];
    unc_atom[3 * i + 1] = epi[i];
    unc_atom[3 * i + 2] = alea[i];
    if (!std::isfinite(tot[i]))  // std::max would skip a NaN (never reached: compute() checks the samples)
      error->one(FLERR, "pair_style bnn: the force std of atom {} is {} at step {}", atom->tag[i],
                 nonfinite(tot[i]), update->ntimestep);
    if (tot[i] > local_max) local_max = tot[i];
  }
  const bnnmd::EnergyStats &es = energy_stats;  // of this step (compute())
  double global_max = 0.0;
  MPI_Allreduce(&local_max, &global_max, 1, MPI_DOUBLE, MPI_MAX, world);
  // the whole box's per-sample virials and sigma_W^2: sums of every rank's share
  std::vector<double> w(sample_virial.size());
  MPI_Allreduce(sample_virial.data(), w.data(), 10 * k, MPI_DOUBLE, MPI_SUM, world);
  for (int q = 0; q < k; q++) w[9 * k + q] = std::sqrt(w[9 * k + q]);
  const bnnmd::EnergyStats pv = bnnmd::virial_stats(w.data(), w.data() + 9 * k, k).pressure_volume;
  // as compute pressure: P_virial = tr(W) / (3 V) x nktv2p; xprd yprd zprd is the volume of a
  // triclinic box too (its edge matrix is triangular)
  const double to_pressure = force->nktv2p / (domain->xprd * domain->yprd * domain->zprd);
  unc_global[0] = es.std;
  unc_global[1] = es.std_epistemic;
  unc_global[2] = es.std_aleatoric;
  unc_global[3] = global_max;
  unc_global[4] = halt_threshold();  // constant: the model's exported halt threshold (0: none)
  unc_global[5] = pv.std * to_pressure;
  unc_global[6] = pv.std_epistemic * to_pressure;
  unc_global[7] = pv.std_aleatoric * to_pressure;
  uncertainty_step = update->ntimestep;
}

void PairBNN::uncertainty(double **peratom, double *global)
{
  update_uncertainty();
  if (peratom)
    for (int i = 0; i < atom->nlocal; i++)
      for (int c = 0; c < 3; c++) peratom[i][c] = unc_atom[3 * i + c];
  if (global)
    for (int c = 0; c < kGlobal; c++) global[c] = unc_global[c];
}

double PairBNN::halt_threshold() const
{
  return evaluator ? evaluator->halt_threshold() : 0.0;
}

void *PairBNN::extract(const char *str, int &dim)
{
  dim = 0;
  if (strcmp(str, "cutoff") == 0) return (void *) &cutoff;
  if (strcmp(str, "energy_std") == 0) return (void *) &energy_stats.std;
  return nullptr;
}

double PairBNN::memory_usage()
{
  double bytes = Pair::memory_usage();
  bytes += sizeof(double) * (sample_forces.capacity() + sample_sigma.capacity() + sample_virial.capacity() +
                             unc_atom.capacity());
  return bytes;
}
