"""`HadoopPath`: the few `pathlib.Path` methods batch discovery uses, over Spark's Hadoop file systems.

`cds_hooks.batch.inputs.discover(args, make_path=HadoopFs(spark).path)` then finds Bulk exports (folders,
manifests, error files) with the very rules of the single-machine review, on whatever the cluster can read:
local paths, `s3a://`, `abfss://`, `dbfs:/`, `hdfs://` — through the JVM's `org.apache.hadoop.fs.FileSystem`
(py4j), never Python's file system. A path keeps the text it was given (reports name files the way the user
did); `uri` is the fully qualified form handed to Spark.
"""
from __future__ import annotations

import io
import re
from pathlib import PurePosixPath

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(//[^/]*)?(.*)$")
_READ_SIZE = 1 << 20


class HadoopFs:
    """The Hadoop file systems of one Spark session (its Hadoop configuration: credentials, endpoints)."""

    def __init__(self, spark) -> None:
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def path(self, text: str) -> HadoopPath:
        return HadoopPath(text, self)

    def _jpath(self, text: str):
        return self._jvm.org.apache.hadoop.fs.Path(text)

    def _fs(self, jpath):
        return jpath.getFileSystem(self._conf)


class HadoopPath:
    """A file or folder on a Hadoop file system, spelled as given (`exports/2026-11`, `s3a://bucket/export`)."""

    def __init__(self, text: str, fs: HadoopFs) -> None:
        match = _SCHEME.match(text)
        if match and len(match.group(1)) > 1:      # `C:` is not a scheme
            self._prefix = f"{match.group(1)}:{match.group(2) or ''}"
            rest = match.group(3) or "/"
        else:
            self._prefix, rest = "", text
        self._pure = PurePosixPath(rest)
        self._fs = fs

    # -- pure path arithmetic (no I/O) --------------------------------------------------------------------
    def __str__(self) -> str:
        return self._prefix + str(self._pure)

    def __repr__(self) -> str:
        return f"HadoopPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HadoopPath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: HadoopPath) -> bool:
        return (self._prefix, self._pure) < (other._prefix, other._pure)

    def __truediv__(self, name: str) -> HadoopPath:
        return HadoopPath(self._prefix + str(self._pure / name), self._fs)

    @property
    def name(self) -> str:
        return self._pure.name

    @property
    def suffix(self) -> str:
        return self._pure.suffix

    @property
    def parent(self) -> HadoopPath:
        return HadoopPath(self._prefix + str(self._pure.parent), self._fs)

    # -- the file system --------------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        """The fully qualified URI (`file:/abs/path`, `s3a://bucket/key`) that Spark reads."""
        jpath = self._fs._jpath(str(self))
        return self._fs._fs(jpath).makeQualified(jpath).toString()

    def resolve(self) -> HadoopPath:
        return HadoopPath(self.uri, self._fs)

    def _status(self):
        jpath = self._fs._jpath(str(self))
        fs = self._fs._fs(jpath)
        return fs.getFileStatus(jpath) if fs.exists(jpath) else None

    def exists(self) -> bool:
        return self._status() is not None

    def is_dir(self) -> bool:
        status = self._status()
        return status is not None and status.isDirectory()

    def is_file(self) -> bool:
        status = self._status()
        return status is not None and status.isFile()

    def size(self) -> int:
        status = self._status()
        return status.getLen() if status is not None else 0

    def iterdir(self):
        jpath = self._fs._jpath(str(self))
        for status in self._fs._fs(jpath).listStatus(jpath):
            yield self / status.getPath().getName()

    def open(self, mode: str = "rb") -> io.BufferedReader:
        if mode != "rb":
            raise ValueError("HadoopPath opens files for binary reading only")
        jpath = self._fs._jpath(str(self))
        return io.BufferedReader(_HadoopStream(self._fs._fs(jpath).open(jpath)), _READ_SIZE)


class _HadoopStream(io.RawIOBase):
    """A Hadoop `FSDataInputStream` read through py4j in blocks (`readNBytes` returns a Java byte[])."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._stream.readNBytes(min(len(buffer), _READ_SIZE))
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()
