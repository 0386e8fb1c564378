#include "bnn_evaluator.h"

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <torch/headeronly/version.h>
#include <torch/script.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "bnn_units.h"

namespace bnnmd {

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::runtime_error(msg); }

torch::Device choose_device(const std::string& device) {
  if (device == "cpu") return torch::kCPU;
  if (device == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::kCPU;
  if (device.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available())
      fail("device '" + device + "' requested but torch sees no CUDA GPU "
           "(a CPU-only torch, or no visible device); use device cpu or auto");
    torch::Device d(device);
    if (d.has_index() && d.index() >= static_cast<int>(torch::cuda::device_count()))
      fail("device '" + device + "' requested but only " + std::to_string(torch::cuda::device_count()) +
           " CUDA device(s) are visible");
    return d;
  }
  fail("unknown device '" + device + "'; use cpu, cuda, cuda:N or auto");
}

}  // namespace

std::string resolve_device(const std::string& device, int local_rank) {
  if (device != "cuda" && device != "auto") return device;
  if (!torch::cuda::is_available()) return device == "auto" ? "cpu" : device;  // cuda: fails with a message later
  const int count = static_cast<int>(torch::cuda::device_count());
  return "cuda:" + std::to_string(local_rank % count);
}

// The whole of v as a number (false for "", "1.5x", "abc", "1e999"); exact, whatever the locale.
static bool parse_double(const std::string& v, double* out) {
  const char* end = v.data() + v.size();
  auto r = std::from_chars(v.data(), end, *out);
  return r.ec == std::errc() && r.ptr == end;
}

std::string format_double(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  char buf[40];
  // the shortest digits that read back to x, as d.ddde+XX; then Python repr's layout of them
  const std::string sci(buf, std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific).ptr);
  const size_t e = sci.find('e');
  const int exp = std::atoi(sci.c_str() + e + 1);
  const bool negative = sci[0] == '-';
  std::string digits = sci.substr(negative, e - negative);
  if (digits.size() > 1) digits.erase(1, 1);  // the point
  std::string out = negative ? "-" : "";
  if (exp < -4 || exp >= 16) {  // d.ddde-XX
    out += digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "") + sci.substr(e);
  } else if (exp < 0) {  // 0.000ddd
    out += "0." + std::string(-exp - 1, '0') + digits;
  } else if (static_cast<size_t>(exp) + 1 >= digits.size()) {  // ddd00.0
    out += digits + std::string(exp + 1 - digits.size(), '0') + ".0";
  } else {  // dd.ddd
    out += digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
  }
  return out;
}

double StdMap::factor_at(double s) const {
  const size_t m = std.size();
  if (m == 1 || s <= std.front()) return factor.front();
  if (s >= std.back()) return factor.back();
  size_t j = 1;
  while (std[j] < s) ++j;  // std[j-1] < s <= std[j]
  const double g0 = std[j - 1] * factor[j - 1], g1 = std[j] * factor[j];
  const double g = g0 + (g1 - g0) * (s - std[j - 1]) / (std[j] - std[j - 1]);
  return g / s;
}

StdMap StdMap::in_units(double std_factor) const {
  StdMap r = *this;
  if (kind != "scale")
    for (double& x : r.std) x *= std_factor;
  return r;
}

std::string StdMap::describe() const {
  std::ostringstream o;
  if (kind == "scale") {
    o << "std x " << factor.front();
  } else {
    o << kind << " map, " << std.size() << " knots, std x " << *std::min_element(factor.begin(), factor.end())
      << ".." << *std::max_element(factor.begin(), factor.end());
  }
  return o.str();
}

std::string StdMap::to_text() const {
  if (kind != "scale" && kind != "isotonic")
    throw std::invalid_argument("calibration map kind '" + kind + "' is unknown (scale or isotonic)");
  if (std.size() != factor.size() || std.empty() || (kind == "scale" && factor.size() != 1))
    throw std::invalid_argument("a " + kind + " map needs as many knots as factors, one for scale, at least one "
                                "(got " + std::to_string(std.size()) + " knots, " + std::to_string(factor.size()) +
                                " factors)");
  std::string out = kind;
  if (kind == "scale") return out + " " + format_double(factor[0]);
  for (size_t i = 0; i < std.size(); ++i) out += " " + format_double(std[i]) + ":" + format_double(factor[i]);
  return out;
}

StdMap parse_std_map(const std::string& text, const std::string& what) {
  auto bad = [&](const std::string& why) {
    fail(what + " = '" + text + "': " + why + "; re-export the samples with bnn-export (the map must be "
         "'scale C' or 'isotonic S:C S:C ...' with positive factors and increasing knots)");
  };
  std::istringstream in(text);
  StdMap m;
  in >> m.kind;
  std::vector<std::string> tokens;
  for (std::string t; in >> t;) tokens.push_back(t);
  auto number = [&](const std::string& v) -> double {
    double x = 0;
    if (!parse_double(v, &x)) bad("'" + v + "' is not a number");
    return x;
  };
  m.std.clear();
  m.factor.clear();
  if (m.kind == "scale") {
    if (tokens.size() != 1) bad("a scale map has one factor");
    m.std.push_back(1.0);
    m.factor.push_back(number(tokens[0]));
  } else if (m.kind == "isotonic") {
    if (tokens.empty()) bad("an isotonic map needs knots");
    for (const auto& t : tokens) {
      auto colon = t.find(':');
      if (colon == std::string::npos) bad("knot '" + t + "' is not S:C");
      m.std.push_back(number(t.substr(0, colon)));
      m.factor.push_back(number(t.substr(colon + 1)));
    }
  } else {
    bad("unknown calibration kind '" + m.kind + "'");
  }
  for (size_t i = 0; i < m.std.size(); ++i) {
    if (!(m.factor[i] > 0) || !std::isfinite(m.factor[i])) bad("factors must be positive");
    if (!(m.std[i] > 0) || !std::isfinite(m.std[i]) || (i > 0 && !(m.std[i] > m.std[i - 1])))
      bad("knots must be positive and strictly increasing");
  }
  return m;
}

namespace {

// MetadataKey of the member M: T is int, double, std::string, std::vector<std::string> or StdMap,
// or std::optional of one of them for an optional key.
template <typename T>
struct KeyType {
  using Value = T;
  static constexpr bool optional = false;
};
template <typename T>
struct KeyType<std::optional<T>> {
  using Value = T;
  static constexpr bool optional = true;
};

template <auto M>
MetadataKey key(const char* name) {
  using Member = std::remove_reference_t<decltype(std::declval<Metadata&>().*M)>;
  using Value = typename KeyType<Member>::Value;
  MetadataKey k;
  k.name = name;
  k.optional = KeyType<Member>::optional;
  k.blank = Value{};
  k.get = [](const Metadata& m) -> std::optional<MetadataValue> {
    if constexpr (KeyType<Member>::optional) {
      if (!(m.*M)) return std::nullopt;
      return MetadataValue(std::in_place_type<Value>, *(m.*M));
    } else {
      return MetadataValue(std::in_place_type<Value>, m.*M);
    }
  };
  k.set = [](Metadata& m, MetadataValue v) { m.*M = std::get<Value>(std::move(v)); };
  return k;
}

// by MetadataValue::index()
const char* kValueKinds[] = {"a whole number", "a number", "a string", "a list of strings", "a calibration map"};

}  // namespace

const std::vector<MetadataKey>& metadata_keys() {
  static const std::vector<MetadataKey> keys = {
      key<&Metadata::format_version>("format_version"),
      key<&Metadata::type_names>("type_names"),
      key<&Metadata::cutoff>("cutoff"),
      key<&Metadata::num_layers>("num_layers"),
      key<&Metadata::num_samples>("num_samples"),
      key<&Metadata::energy_unit>("energy_unit"),
      key<&Metadata::length_unit>("length_unit"),
      key<&Metadata::dtype>("dtype"),
      key<&Metadata::calibration_forces>("calibration_forces"),
      key<&Metadata::calibration_energy>("calibration_energy"),
      key<&Metadata::method>("method"),
      key<&Metadata::samples_sha256>("samples_sha256"),
      key<&Metadata::bnnmd_version>("bnnmd_version"),
      key<&Metadata::torch_version>("torch_version"),
      key<&Metadata::halt_threshold>("halt_threshold"),
      key<&Metadata::halt_rule>("halt_rule"),
  };
  return keys;
}

Metadata metadata_from_values(const std::map<std::string, MetadataValue>& values) {
  Metadata m;
  std::string missing;
  for (const MetadataKey& k : metadata_keys()) {
    auto it = values.find(k.name);
    if (it == values.end()) {
      if (!k.optional) missing += (missing.empty() ? "" : ", ") + k.name;
      continue;
    }
    if (it->second.index() != k.blank.index())
      throw std::invalid_argument("metadata value of " + k.name + " must be " + kValueKinds[k.blank.index()] +
                                  ", not " + kValueKinds[it->second.index()]);
    k.set(m, it->second);
  }
  if (!missing.empty()) throw std::invalid_argument("metadata lacks " + missing);
  return m;
}

std::vector<std::pair<std::string, MetadataValue>> metadata_values(const Metadata& m) {
  std::vector<std::pair<std::string, MetadataValue>> out;
  for (const MetadataKey& k : metadata_keys())
    if (std::optional<MetadataValue> v = k.get(m)) out.emplace_back(k.name, std::move(*v));
  return out;
}

std::string metadata_to_text(const Metadata& m) {
  std::string out;
  for (const auto& entry : metadata_values(m)) {
    const std::string& name = entry.first;
    const std::string text = std::visit([&](const auto& v) -> std::string {
      using T = std::decay_t<decltype(v)>;
      if constexpr (std::is_same_v<T, int>) {
        return std::to_string(v);
      } else if constexpr (std::is_same_v<T, double>) {
        return format_double(v);
      } else if constexpr (std::is_same_v<T, std::string>) {
        return v;
      } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
        std::string words;
        for (const std::string& t : v) {
          if (t.empty() || std::any_of(t.begin(), t.end(), [](unsigned char c) { return std::isspace(c); }))
            throw std::invalid_argument("metadata " + name + " holds '" + t + "': each must be non-empty, without "
                                        "spaces");
          words += (words.empty() ? "" : " ") + t;
        }
        return words;
      } else {
        return v.to_text();
      }
    }, entry.second);
    if (text.empty() || text.find_first_of("\r\n") != std::string::npos)
      throw std::invalid_argument("metadata value of " + name + " must be a non-empty single line");
    out += name + " " + text + "\n";
  }
  return out;
}

Metadata parse_metadata(const std::string& text, const std::string& path) {
  std::unordered_map<std::string, std::string> kv;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto sp = line.find(' ');
    if (sp == std::string::npos) continue;
    kv[line.substr(0, sp)] = line.substr(sp + 1);
  }
  auto bad = [&](const std::string& key, const std::string& why) {
    fail(path + ": bnnmd metadata '" + key + "'" + why + "; re-export the model with bnn-export");
  };
  auto number = [&](const std::string& key, const std::string& v) {
    double x = 0;
    if (!parse_double(v, &x)) bad(key, " = '" + v + "' is not a number");
    return x;
  };
  // the version first: another version may have other keys
  auto version = kv.find("format_version");
  if (version != kv.end() && number("format_version", version->second) != kFormatVersion)
    fail(path + ": bnnmd model format version " + version->second +
         " is unknown to this bnnmd (it reads version " + std::to_string(kFormatVersion) +
         "); re-export the samples with this bnnmd's bnn-export, or install the bnnmd that wrote it");
  std::map<std::string, MetadataValue> values;
  for (const MetadataKey& k : metadata_keys()) {
    auto it = kv.find(k.name);
    if (it == kv.end()) {
      if (!k.optional) fail(path + ": bnnmd metadata lacks '" + k.name + "'; re-export the model with bnn-export");
      continue;
    }
    const std::string& v = it->second;
    values[k.name] = std::visit([&](const auto& blank) -> MetadataValue {
      using T = std::decay_t<decltype(blank)>;
      if constexpr (std::is_same_v<T, int>) {
        const double x = number(k.name, v);
        if (x != std::floor(x) || std::abs(x) > 1e9) bad(k.name, " = '" + v + "' is not a whole number");
        return static_cast<int>(x);
      } else if constexpr (std::is_same_v<T, double>) {
        return number(k.name, v);
      } else if constexpr (std::is_same_v<T, std::string>) {
        return v;
      } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
        std::istringstream words(v);
        T list;
        for (std::string t; words >> t;) list.push_back(t);
        return list;
      } else {
        return parse_std_map(v, path + ": bnnmd metadata '" + k.name + "'");
      }
    }, k.blank);
  }
  Metadata m = metadata_from_values(values);
  if (m.halt_threshold && !(*m.halt_threshold > 0)) bad("halt_threshold", " must be > 0");
  if (m.type_names.empty() || m.cutoff <= 0 || m.num_layers < 1 || m.num_samples < 1)
    fail(path + ": bnnmd metadata is inconsistent (type names, cutoff, layers or samples); re-export");
  if (m.dtype != "float64" && m.dtype != "float32") fail(path + ": unknown dtype '" + m.dtype + "'");
  return m;
}

std::vector<int> hops_from_local(int n, int nlocal, const int64_t* centre, const int64_t* neighbour,
                                 int64_t n_edges, int max_hops) {
  std::vector<int> hop(n, max_hops + 1);
  for (int i = 0; i < nlocal; ++i) hop[i] = 0;
  for (int level = 0; level < max_hops; ++level)  // breadth first: one sweep of the edges per level
    for (int64_t e = 0; e < n_edges; ++e)
      if (hop[centre[e]] == level && hop[neighbour[e]] > level + 1) hop[neighbour[e]] = level + 1;
  return hop;
}

std::string missing_cpu_features(const std::string& isa) {
  std::istringstream words(isa);
  std::string word, missing;
  auto lacks = [&missing](const std::string& feature) { missing += (missing.empty() ? "" : ", ") + feature; };
  while (words >> word) {
    std::transform(word.begin(), word.end(), word.begin(), [](unsigned char c) { return std::toupper(c); });
#if defined(__x86_64__) || defined(__i386__)
#define BNNMD_NEED(feature) \
  if (!__builtin_cpu_supports(feature)) lacks(feature)
    if (word == "AVX512") {
      BNNMD_NEED("avx512f");
      BNNMD_NEED("avx512dq");
      BNNMD_NEED("avx512vl");
      BNNMD_NEED("avx512bw");
      BNNMD_NEED("fma");
    } else if (word == "AVX512_VNNI") {
      BNNMD_NEED("avx512vnni");
    } else if (word == "AVX2") {
      BNNMD_NEED("avx2");
      BNNMD_NEED("fma");
    } else if (word == "NEON" || word.rfind("SVE", 0) == 0 || word == "VSX" || word == "ZVECTOR") {
      lacks(word);  // another architecture's
    }
#undef BNNMD_NEED
#else
    if (word.rfind("AVX", 0) == 0 || word.rfind("AMX", 0) == 0) lacks(word);  // x86's
#endif
  }
  return missing;
}

std::unordered_map<std::string, std::string> read_pt2_metadata(const std::string& path) {
  try {
    return torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, "model");
  } catch (const std::exception& e) {
    fail("'" + path + "' is not an AOTInductor package that this torch can read; export a model with "
         "bnn-export SAMPLES_DIR OUT.pt2 (" + std::string(e.what()).substr(0, 200) + ")");
  }
}

// One exported model behind one call: inputs (pos, types, edges, shifts, nlocal) on the model's
// device and dtype -> the kNumOutputs tensors, indexed by Output; an output that the file predates
// (index >= kRequiredOutputs) is an undefined tensor.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::vector<torch::Tensor> run(const torch::Tensor& pos, const torch::Tensor& types,
                                         const torch::Tensor& edges, const torch::Tensor& shifts,
                                         int64_t nlocal) = 0;
};

namespace {

bool is_pt2(const std::string& path) {
  return path.size() >= 4 && path.compare(path.size() - 4, 4, ".pt2") == 0;
}

// TorchScript (.pth): torch::jit::load, a dict of outputs.
class ScriptBackend : public Backend {
 public:
  ScriptBackend(const std::string& path, const torch::Device& device, Metadata* meta) {
    std::unordered_map<std::string, std::string> extra{{kMetadataFile, ""}};
    try {
      module_ = torch::jit::load(path, device, extra);
    } catch (const std::exception& e) {
      fail("'" + path + "' is not a TorchScript archive that this torch can load; export a model with "
           "bnn-export SAMPLES_DIR OUT.pth (" + std::string(e.what()).substr(0, 200) + ")");
    }
    if (extra[kMetadataFile].empty())
      fail("'" + path + "' is a TorchScript file but not a bnnmd model (no " + std::string(kMetadataFile) +
           " metadata); export one with bnn-export SAMPLES_DIR OUT.pth");
    *meta = parse_metadata(extra[kMetadataFile], path);
    module_.eval();
  }
  std::vector<torch::Tensor> run(const torch::Tensor& pos, const torch::Tensor& types, const torch::Tensor& edges,
                                 const torch::Tensor& shifts, int64_t nlocal) override {
    std::vector<torch::jit::IValue> inputs{pos, types, edges, shifts, nlocal};
    torch::AutoGradMode grad(true);  // forces are gradients: never run under no_grad
    c10::impl::GenericDict out = module_.forward(inputs).toGenericDict();
    std::vector<torch::Tensor> r;
    for (int o = 0; o < kNumOutputs; ++o) {
      const char* key = kOutputKeys[o];
      if (out.contains(key))
        r.push_back(out.at(key).toTensor().detach());
      else if (o >= kRequiredOutputs)  // exported before this output existed
        r.emplace_back();
      else
        fail(std::string("the TorchScript model returned no '") + key + "'; re-export it with this bnnmd's "
             "bnn-export");
    }
    return r;
  }

 private:
  torch::jit::Module module_;
};

// AOTInductor package (.pt2): compiled for one torch (major.minor) and one device type; atom and
// edge counts >= 2 (smaller inputs are padded with two ghost atoms joined by two edges: ghosts
// carry no energy and their forces are dropped, so the padding changes nothing).
class Pt2Backend : public Backend {
 public:
  Pt2Backend(const std::string& path, const torch::Device& device, Metadata* parsed) {
    std::unordered_map<std::string, std::string> meta = read_pt2_metadata(path);
    auto it = meta.find(kMetadataFile);
    if (it == meta.end() || it->second.empty())
      fail("'" + path + "' is an AOTInductor package but not a bnnmd model (no " + std::string(kMetadataFile) +
           " metadata); export one with bnn-export SAMPLES_DIR OUT.pt2");
    *parsed = parse_metadata(it->second, path);
    // refuse what cannot run before loading the compiled code
    const std::string here = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR);
    const Metadata& m = *parsed;
    const std::string there = m.torch_version.substr(0, m.torch_version.find('.', m.torch_version.find('.') + 1));
    if (there != here)
      fail("'" + path + "' was compiled by torch " + m.torch_version + " and this bnnmd runs torch " + here +
           ".x: a .pt2 package runs only with the torch version that compiled it; re-export it here with "
           "bnn-export SAMPLES_DIR OUT.pt2, or use the TorchScript file (OUT.pth), which any torch loads");
    const std::string compiled_for = meta.count("AOTI_DEVICE_KEY") ? meta["AOTI_DEVICE_KEY"] : "cpu";
    const std::string wanted = device.is_cuda() ? "cuda" : "cpu";
    if (compiled_for != wanted)
      fail("'" + path + "' was compiled for " + compiled_for + " and is asked to run on " + device.str() +
           ": a .pt2 package runs only on the device type it was compiled for; re-export with bnn-export "
           "SAMPLES_DIR OUT.pt2 --device " + wanted + ", or run it on " + compiled_for);
    if (compiled_for == "cpu" && meta.count("AOTI_CPU_ISA")) {
      const std::string missing = missing_cpu_features(meta["AOTI_CPU_ISA"]);
      if (!missing.empty())
        fail("'" + path + "' was compiled for CPUs with " + meta["AOTI_CPU_ISA"] + " and this CPU lacks " + missing +
             ": its kernels would stop on an illegal instruction; re-export it on this machine (or one with "
             "the same CPU) with bnn-export SAMPLES_DIR OUT.pt2, or use the TorchScript file (OUT.pth)");
    }
    try {
      loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
          path, "model", /*run_single_threaded=*/false, /*num_runners=*/1,
          device.is_cuda() && device.has_index() ? device.index() : -1);
    } catch (const std::exception& e) {
      fail("'" + path + "' cannot be loaded by this torch (" + std::string(e.what()).substr(0, 300) +
           "); re-export it here with bnn-export SAMPLES_DIR OUT.pt2, or use the TorchScript file (OUT.pth)");
    }
  }
  std::vector<torch::Tensor> run(const torch::Tensor& pos, const torch::Tensor& types, const torch::Tensor& edges,
                                 const torch::Tensor& shifts, int64_t nlocal) override {
    const int64_t n = pos.size(0), ne = edges.size(1);
    std::vector<torch::Tensor> in;
    if (n >= 2 && ne >= 2) {
      in = {pos, types, edges, shifts};
    } else {
      // two ghosts at distance 1 (model units) from each other, far from every atom, joined both ways
      torch::Tensor far = pos.numel() ? pos.abs().max() + 1000.0 : torch::zeros({}, pos.options());
      torch::Tensor p2 = torch::stack({far.expand({3}), far.expand({3}) + torch::tensor({1.0, 0.0, 0.0}, pos.options())});
      torch::Tensor e2 = torch::tensor({n, n + 1, n + 1, n}, edges.options()).view({2, 2});
      in = {torch::cat({pos, p2}), torch::cat({types, torch::zeros({2}, types.options())}), torch::cat({edges, e2}, 1),
            torch::cat({shifts, torch::zeros({2, 3}, shifts.options())})};
    }
    in.push_back(torch::scalar_tensor(nlocal, edges.options()));  // 0-d int64
    std::vector<torch::Tensor> out = loader_->run(in);
    const int got = static_cast<int>(out.size());
    if (got < kRequiredOutputs || got > kNumOutputs)
      fail("the .pt2 package returned " + std::to_string(got) + " outputs, not " + std::to_string(kNumOutputs) +
           " (or " + std::to_string(kRequiredOutputs) + " for a package exported before virial_std); re-export "
           "it with this bnnmd's bnn-export");
    out.resize(kNumOutputs);  // a package exported before the last outputs: undefined tensors
    if (in[0].size(0) != n)  // drop the padding: atomic energies [k, N], forces [k, N, 3], stds [k, N]
      for (int o : {kAtomicEnergy, kForces, kForcesStd}) out[o] = out[o].narrow(1, 0, n);
    return out;
  }

 private:
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
};

}  // namespace

struct Evaluator::Impl {
  std::unique_ptr<Backend> backend;
  Metadata meta;
  torch::Device device = torch::kCPU;
  torch::Dtype dtype = torch::kFloat64;
  std::string format;          // "torchscript" or "pt2"
  std::string energy_unit, length_unit;
  double to_model_length = 1;  // x evaluator length -> model length
  double energy_out = 1;       // x model energy -> evaluator energy
  double length_out = 1;       // x model length -> evaluator length
  StdMap cal_forces, cal_energy;  // knots in the evaluator's units
};

Evaluator::Evaluator(const std::string& path, const std::string& device, const std::string& energy_unit,
                     const std::string& length_unit)
    : impl_(new Impl) {
  {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) fail("model file '" + path + "' cannot be opened (missing or unreadable)");
  }
  impl_->device = choose_device(device);
  if (is_pt2(path)) {  // each backend reads and parses the metadata once, before the compiled code
    impl_->format = "pt2";
    impl_->backend = std::make_unique<Pt2Backend>(path, impl_->device, &impl_->meta);
  } else {
    impl_->format = "torchscript";
    impl_->backend = std::make_unique<ScriptBackend>(path, impl_->device, &impl_->meta);
  }
  impl_->dtype = impl_->meta.dtype == "float32" ? torch::kFloat32 : torch::kFloat64;
  impl_->energy_unit = energy_unit.empty() ? impl_->meta.energy_unit : energy_unit;
  impl_->length_unit = length_unit.empty() ? impl_->meta.length_unit : length_unit;
  impl_->energy_out = energy_factor(impl_->meta.energy_unit, impl_->energy_unit);
  impl_->length_out = length_factor(impl_->meta.length_unit, impl_->length_unit);
  impl_->to_model_length = 1.0 / impl_->length_out;
  impl_->cal_forces = impl_->meta.calibration_forces.in_units(impl_->energy_out / impl_->length_out);
  impl_->cal_energy = impl_->meta.calibration_energy.in_units(impl_->energy_out);
}

Evaluator::~Evaluator() = default;

const Metadata& Evaluator::metadata() const { return impl_->meta; }
std::string Evaluator::device() const { return impl_->device.str(); }
const std::string& Evaluator::format() const { return impl_->format; }
double Evaluator::cutoff() const { return impl_->meta.cutoff * impl_->length_out; }
double Evaluator::halt_threshold() const {
  return impl_->meta.halt_threshold.value_or(0.0) * impl_->energy_out / impl_->length_out;
}
const std::string& Evaluator::energy_unit() const { return impl_->energy_unit; }
const std::string& Evaluator::length_unit() const { return impl_->length_unit; }

SampleOutput Evaluator::evaluate(const double* pos, const int64_t* types, int n, int nlocal,
                                 const int64_t* edges, const double* shifts, int64_t n_edges) const {
  const Impl& I = *impl_;
  const int64_t ntypes = static_cast<int64_t>(I.meta.type_names.size());
  for (int i = 0; i < n; ++i)
    if (types[i] < 0 || types[i] >= ntypes)
      fail("atom " + std::to_string(i) + " has type index " + std::to_string(types[i]) + ", the model has " +
           std::to_string(ntypes) + " types");
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  std::vector<int64_t> kept_edges;
  std::vector<double> kept_shifts;
  if (I.format == "pt2" && nlocal < n) {
    // The compiled graph has no data-dependent branches, so the ghost pruning that the TorchScript
    // model does inside happens here: keep the edges whose centre lies within L - 1 hops of a local
    // atom; the others reach no counted energy. Exact. (Input from pair_style bnn is pruned already:
    // then nothing is dropped and nothing copied.)
    const int L = I.meta.num_layers;
    const std::vector<int> hops = hops_from_local(n, nlocal, edges, edges + n_edges, n_edges, L - 1);
    for (int64_t e = 0; e < n_edges; ++e)
      if (hops[edges[e]] <= L - 1) kept_edges.push_back(e);
    const int64_t m = static_cast<int64_t>(kept_edges.size());
    if (m < n_edges) {
      std::vector<int64_t> pruned(2 * m);
      kept_shifts.resize(3 * m);
      for (int64_t j = 0; j < m; ++j) {
        pruned[j] = edges[kept_edges[j]];
        pruned[m + j] = edges[n_edges + kept_edges[j]];
        for (int c = 0; c < 3; ++c) kept_shifts[3 * j + c] = shifts[kept_edges[j] * 3 + c];
      }
      kept_edges.swap(pruned);
      edges = kept_edges.data();
      shifts = kept_shifts.data();
      n_edges = m;
    }
  }
  // copies of the caller's arrays (from_blob does not own), in model units and dtype
  torch::Tensor t_pos = torch::from_blob(const_cast<double*>(pos), {n, 3}, f64).clone() * I.to_model_length;
  torch::Tensor t_types = torch::from_blob(const_cast<int64_t*>(types), {n}, i64).clone();
  torch::Tensor t_edges = torch::from_blob(const_cast<int64_t*>(edges), {2, n_edges}, i64).clone();
  torch::Tensor t_shift =
      torch::from_blob(const_cast<double*>(shifts), {n_edges, 3}, f64).clone() * I.to_model_length;
  std::vector<torch::Tensor> out =
      I.backend->run(t_pos.to(I.device, I.dtype), t_types.to(I.device), t_edges.to(I.device),
                     t_shift.to(I.device, I.dtype), static_cast<int64_t>(nlocal));
  auto take = [&](int index, double scale) {
    torch::Tensor t = out[index].detach().to(torch::kCPU, torch::kFloat64).contiguous();
    std::vector<double> v(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
    for (double& x : v) x *= scale;
    return v;
  };
  SampleOutput s;
  s.k = I.meta.num_samples;
  s.n = n;
  const double e = I.energy_out, fl = I.energy_out / I.length_out;
  s.energy = take(kTotalEnergy, e);
  s.atomic_energy = take(kAtomicEnergy, e);
  s.forces = take(kForces, fl);
  s.energy_std = take(kTotalEnergyStd, e);
  s.forces_std = take(kForcesStd, fl);
  s.virial = take(kVirial, e);
  s.virial_std = out[kVirialStd].defined() ? take(kVirialStd, e) : std::vector<double>(s.k, 0.0);
  return s;
}

EnergyStats energy_stats(const double* energy, const double* energy_std, int k, const StdMap& calibration) {
  EnergyStats r;
  double mean = 0, alea = 0, epi = 0;
  for (int s = 0; s < k; ++s) mean += energy[s];
  mean /= k;
  for (int s = 0; s < k; ++s) {
    epi += (energy[s] - mean) * (energy[s] - mean);
    alea += energy_std[s] * energy_std[s];
  }
  epi /= k;
  alea /= k;
  const double c = calibration.factor_at(std::sqrt(epi + alea));
  epi *= c * c;
  alea *= c * c;
  r.mean = mean;
  r.std_epistemic = std::sqrt(epi);
  r.std_aleatoric = std::sqrt(alea);
  r.std = std::sqrt(epi + alea);
  return r;
}

void force_stats(const double* forces, const double* forces_std, int k, int n, const StdMap& calibration,
                 double* mean, double* std_total, double* std_epistemic, double* std_aleatoric) {
  for (int i = 0; i < n; ++i) {
    double epi = 0, alea = 0;
    for (int c = 0; c < 3; ++c) {
      double m = 0;
      for (int s = 0; s < k; ++s) m += forces[(static_cast<int64_t>(s) * n + i) * 3 + c];
      m /= k;
      mean[i * 3 + c] = m;
      for (int s = 0; s < k; ++s) {
        double d = forces[(static_cast<int64_t>(s) * n + i) * 3 + c] - m;
        epi += d * d;
      }
    }
    epi /= 3.0 * k;
    if (forces_std)
      for (int s = 0; s < k; ++s) {
        double sd = forces_std[static_cast<int64_t>(s) * n + i];
        alea += sd * sd;
      }
    alea /= k;
    const double cf = calibration.factor_at(std::sqrt(epi + alea));
    epi *= cf * cf;
    alea *= cf * cf;
    std_epistemic[i] = std::sqrt(epi);
    std_aleatoric[i] = std::sqrt(alea);
    std_total[i] = std::sqrt(epi + alea);
  }
}

VirialStats virial_stats(const double* virial, const double* virial_std, int k) {
  VirialStats r;
  double alea = 0;  // mean_s sigma_W,s^2
  if (virial_std)
    for (int s = 0; s < k; ++s) alea += virial_std[s] * virial_std[s];
  alea /= k;
  for (int c = 0; c < 9; ++c) {
    double m = 0, epi = 0;
    for (int s = 0; s < k; ++s) m += virial[s * 9 + c];
    m /= k;
    for (int s = 0; s < k; ++s) epi += (virial[s * 9 + c] - m) * (virial[s * 9 + c] - m);
    epi /= k;
    r.mean[c] = m;
    r.std_epistemic[c] = std::sqrt(epi);
    r.std_aleatoric[c] = std::sqrt(alea);
    r.std[c] = std::sqrt(epi + alea);
  }
  // tr(W_s)/3 per sample; its aleatoric variance: 3 independent components of variance sigma^2, / 9
  EnergyStats& p = r.pressure_volume;
  double m = 0, epi = 0;
  for (int s = 0; s < k; ++s) m += (virial[s * 9] + virial[s * 9 + 4] + virial[s * 9 + 8]) / 3.0;
  m /= k;
  for (int s = 0; s < k; ++s) {
    const double d = (virial[s * 9] + virial[s * 9 + 4] + virial[s * 9 + 8]) / 3.0 - m;
    epi += d * d;
  }
  epi /= k;
  p.mean = m;
  p.std_epistemic = std::sqrt(epi);
  p.std_aleatoric = std::sqrt(alea / 3.0);
  p.std = std::sqrt(epi + alea / 3.0);
  return r;
}

EnergyStats Evaluator::energy_stats(const double* energy, const double* energy_std, int k) const {
  return bnnmd::energy_stats(energy, energy_std, k, impl_->cal_energy);
}

void Evaluator::force_stats(const double* forces, const double* forces_std, int k, int n, double* mean,
                            double* std_total, double* std_epistemic, double* std_aleatoric) const {
  bnnmd::force_stats(forces, forces_std, k, n, impl_->cal_forces, mean, std_total, std_epistemic, std_aleatoric);
}

}  // namespace bnnmd
