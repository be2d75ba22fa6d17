"""Stand-in CUDA libraries: onnxruntime's CUDA provider loads on a machine without a GPU.

onnxruntime-gpu's CUDA provider (``libonnxruntime_providers_cuda.so``) links against the
CUDA runtime, cuBLAS, cuBLASLt, cuRAND and the driver; its TensorRT provider also against
cuDNN and TensorRT. Where these are missing the provider does not load, and neither its
kernel registry nor its graph partitioner can be asked anything. This module builds, with
the machine's gcc, one small library per missing dependency (the ``NEEDED`` entries that
``readelf -d`` lists), defining every function the providers import from it
(``readelf --dyn-syms``: undefined, with their symbol versions). The functions are those
of ``cuda_standin.c``, which answer what creating a session asks (one device of compute
capability 9.0, host memory for device memory); every other function returns success.

Nothing can be computed with them, so a session on them proves placement, not numbers.
The libraries are built once per onnxruntime build into a cache folder
(``$XDG_CACHE_HOME/ssdonnx`` or ``~/.cache/ssdonnx``), never into the package, and are
only ever loaded by a child process (``ssdonnx.devtools.placement`` starts it with
``LD_LIBRARY_PATH`` pointing at them).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import StandInUnavailable

SOURCE = Path(__file__).with_name("cuda_standin.c")
PROVIDER_LIBRARIES = ("libonnxruntime_providers_cuda.so",
                      "libonnxruntime_providers_tensorrt.so")
# Libraries of the C and C++ runtime that every machine has: never stood in for.
SYSTEM_LIBRARIES = ("libc.so", "libm.so", "libdl.so", "librt.so", "libpthread.so",
                    "libstdc++.so", "libgcc_s.so", "ld-linux")
# The CUDA driver: some provider builds open it with dlopen and look its functions up by
# name with dlsym (onnxruntime 1.21's CUDADriverWrapper) instead of linking against it.
DRIVER = "libcuda.so.1"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StandInUnavailable(f"{name} not found: building the stand-in CUDA libraries "
                                 "needs gcc and readelf (binutils)")
    return path


def _readelf(*args: str) -> str:
    return subprocess.run([_tool("readelf"), "-W", *args], capture_output=True, text=True,
                          check=True).stdout


def provider_libraries(capi: Path) -> list[Path]:
    """The CUDA and TensorRT provider libraries of an onnxruntime ``capi`` folder."""
    return [capi / name for name in PROVIDER_LIBRARIES if (capi / name).is_file()]


def needed(library: Path) -> list[str]:
    """The libraries ``library`` links against that are stood in for: all but the C and
    C++ runtime and onnxruntime's own."""
    names = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", _readelf("-d", str(library)))
    return [n for n in names if not n.startswith(SYSTEM_LIBRARIES + ("libonnxruntime",))]


def driver_lookups(library: Path) -> set[str] | None:
    """The CUDA driver functions that ``library`` may look up by name (``cu...`` strings
    in its data), if it names the driver library at all; else None."""
    with open(library, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data.find(b"\x00" + DRIVER.encode() + b"\x00") < 0:
            return None
        return {m.decode() for m in re.findall(rb"(?<![A-Za-z0-9_])(cu[A-Z][A-Za-z0-9_]{2,})\x00",
                                                data)}


def imports(library: Path) -> dict[str, dict[str, str | None]]:
    """Per stood-in library: the functions ``library`` imports from it and their symbol
    version (None if unversioned). An unversioned import goes to the first stood-in
    library: the dynamic linker finds it in any library ``library`` needs. The driver,
    if ``library`` opens it by name, gets the functions it may look up there."""
    sonames = needed(library)
    out: dict[str, dict[str, str | None]] = {name: {} for name in sonames}
    lookups = driver_lookups(library)
    if lookups is not None:
        out.setdefault(DRIVER, {}).update(dict.fromkeys(lookups))
    # "Version needs": which file each version name comes from.
    file_of, current = {}, None
    for line in _readelf("-V", str(library)).splitlines():
        if m := re.search(r"File: (\S+)", line):
            current = m.group(1)
        elif (m := re.search(r"Name: (\S+)", line)) and current:
            file_of[m.group(1)] = current
    for line in _readelf("--dyn-syms", str(library)).splitlines():
        fields = line.split()
        if len(fields) < 8 or fields[6] != "UND" or fields[3] not in ("FUNC", "OBJECT"):
            continue
        name, _, version = fields[7].partition("@")
        version = version.lstrip("@") or None
        owner = file_of.get(version) if version else (sonames[0] if sonames else None)
        if owner in out and name not in out.get(DRIVER, {}):
            out[owner][name] = version
    return out


def _defined(source: str) -> set[str]:
    """Names of the functions that the stand-in source defines itself."""
    return set(re.findall(r"^(?:int|size_t|const char \*|void \*\*)\s*(\w+)\(", source, re.M))


def _version_script(symbols: dict[str, str | None]) -> str:
    """Export exactly ``symbols``, each under its version (the unversioned ones under
    the library's first version, which an unversioned reference also binds to)."""
    by_version: dict[str | None, list[str]] = {}
    for name, version in sorted(symbols.items()):
        by_version.setdefault(version, []).append(name)
    versions = [v for v in by_version if v is not None]
    if not versions:
        exported = "".join(f"{n}; " for n in by_version.get(None, []))
        return f"{{ {'global: ' + exported if exported else ''}local: *; }};\n"
    by_version[versions[0]] += by_version.pop(None, [])
    nodes = []
    for i, version in enumerate(versions):
        exported = "".join(f"{n}; " for n in by_version[version])
        nodes.append(f"{version} {{ global: {exported}{'local: *; ' if i == 0 else ''}}};")
    return "\n".join(nodes) + "\n"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ssdonnx" / "cuda-standin"


def build(capi: Path, cache: Path | None = None) -> Path:
    """Build (once) the stand-ins for the providers in onnxruntime's ``capi`` folder;
    returns the folder that holds them, for ``LD_LIBRARY_PATH``."""
    libraries = provider_libraries(capi)
    if not libraries:
        raise StandInUnavailable(f"no CUDA provider library in {capi}: install "
                                 "onnxruntime-gpu")
    gcc = _tool("gcc")
    _tool("readelf")
    source = SOURCE.read_text()
    key = hashlib.sha256(source.encode())
    for lib in libraries:
        stat = lib.stat()
        key.update(f"{lib.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    folder = (cache or cache_root()) / key.hexdigest()[:16]
    if (folder / "complete").exists():
        return folder
    symbols: dict[str, dict[str, str | None]] = {}
    for lib in libraries:
        for soname, funcs in imports(lib).items():
            symbols.setdefault(soname, {}).update(funcs)
    defined = _defined(source)
    everything = sorted({name for funcs in symbols.values() for name in funcs} - defined)
    program = source + "\n/* Generated: every other imported function succeeds. */\n" + \
        "".join(f"int {name}(void) {{ return 0; }}\n" for name in everything)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        tmp = Path(tmp)
        (tmp / "standin.c").write_text(program)
        for soname, funcs in symbols.items():
            script = tmp / f"{soname}.map"
            script.write_text(_version_script(funcs))
            result = subprocess.run(
                [gcc, "-shared", "-fPIC", "-O1", "-w", "-o", str(tmp / soname),
                 f"-Wl,-soname,{soname}", f"-Wl,--version-script={script}",
                 str(tmp / "standin.c")], capture_output=True, text=True)
            if result.returncode:
                raise StandInUnavailable(f"gcc could not build the stand-in {soname}: "
                                         f"{result.stderr.strip()[-500:]}")
        (tmp / "complete").write_text("".join(f"{s}\n" for s in symbols))
        try:
            tmp.rename(folder)
        except OSError:        # built meanwhile by another process
            if not (folder / "complete").exists():
                raise
    return folder
