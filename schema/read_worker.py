"""A read process: where schema.read.query's statements run, apart from the process that asked.

schema.read starts it (`python -m schema.read_worker`) with an environment of PATH, locale and
HOME only. What opening the lake needs arrives in its first message and is set with putenv (so
/proc/<pid>/environ never shows it): libpq's PG* with the catalog password as PGPASSWORD, and
AWS_* for an s3:// data path (they become a DuckDB secret and are dropped). It then

1. caps its own memory with RLIMIT_DATA before DuckDB is imported: every allocation past the
   limit fails, including the ones DuckDB's own memory_limit does not track (one huge string or
   list built by a scalar function), and DuckDB turns the failure into an OutOfMemoryException;
2. opens the lake READ_ONLY through schema.lake, sets DuckDB's memory_limit below the cap, a
   private spill directory with a size cap, and confines file access and locks the
   configuration (lake.confine);
3. answers one request at a time: [8-byte length][payload] frames on stdin/stdout. Requests
   are pickles from the parent (which trusts what it wrote); replies are a JSON header and, for
   a result, an Arrow IPC stream: never a pickle, so nothing this process sends can run code in
   its caller.

The statement was checked against schema.read's allow-list before it got here; the time limit
is enforced twice (cursor.interrupt here, and the parent kills this process past it).
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import signal
import struct
import sys
import threading
import traceback
from typing import Any, BinaryIO

_FRAME = struct.Struct(">Q")
_BATCH_ROWS = 65_536


def read_frame(stream: BinaryIO) -> bytes | None:
    """One frame, or None at end of input (the parent is gone)."""
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    size = _FRAME.unpack(head)[0]
    body = stream.read(size)
    return body if len(body) == size else None


def write_frame(stream: BinaryIO, payload: bytes | memoryview | Any) -> None:
    stream.write(_FRAME.pack(memoryview(payload).nbytes))
    stream.write(payload)


def _reply(stream: BinaryIO, header: dict[str, Any], payload: Any = None) -> None:
    write_frame(stream, json.dumps(header).encode())
    if payload is not None:
        write_frame(stream, payload)
    stream.flush()


def _failure(kind: str, error: BaseException) -> dict[str, Any]:
    return {
        "status": "error", "kind": kind, "class": type(error).__name__, "message": str(error),
        "detail": "".join(traceback.format_exception(error)),
    }  # fmt: skip


def _cap_memory(limit: int) -> None:
    """RLIMIT_DATA counts the heap and every private writable mapping: malloc and mmap fail past `limit`
    (or past a lower hard limit the process was started with)."""
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    limit = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))  # the hard limit too: nothing raises it again


def _open(init: dict[str, Any]) -> Any:
    from schema import lake
    from schema.config import StoreConfig

    config = StoreConfig.model_validate(init["config"])
    os.environ.update(init["env"])  # libpq reads PG*; lake.connect makes the S3 secret from AWS_*
    conn = lake.connect(config, read_only=True)
    for name in [key for key in os.environ if key.startswith("AWS_")]:  # now inside DuckDB's secret
        del os.environ[name]
    duckdb_limit = init["duckdb_memory_limit"]
    conn.execute(f"SET memory_limit = '{duckdb_limit}B'")
    conn.execute(f"SET temp_directory = '{init['spill_dir']}'")
    conn.execute(f"SET max_temp_directory_size = '{init['spill_limit']}B'")
    conn.execute("SET enable_progress_bar = false")
    conn.execute("SET python_enable_replacements = false")  # no Python variable is a table here
    lake.confine(conn, config)  # file access to the lake only, external access off, configuration locked
    return conn


def _run(conn: Any, request: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    import duckdb
    import pyarrow as pa

    from schema.config import LAKE_ALIAS

    cursor = conn.cursor()
    timer = threading.Timer(max(request["timeout_s"], 0.0), cursor.interrupt)
    try:
        cursor.execute(f"USE {LAKE_ALIAS}")
        timer.start()
        reader = cursor.execute(request["sql"], request["params"]).to_arrow_reader(_BATCH_ROWS)
        batches, rows, size = [], 0, 0
        for batch in reader:
            rows += batch.num_rows
            size += batch.nbytes
            if rows > request["max_rows"]:
                return {"status": "error", "kind": "rows"}, None
            if size > request["max_bytes"]:
                return {"status": "error", "kind": "bytes"}, None
            batches.append(batch)
        timer.cancel()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, reader.schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        return {"status": "ok", "rows": rows, "bytes": size}, sink.getvalue()  # a pyarrow Buffer: no copy
    except duckdb.InterruptException as error:
        return _failure("timeout", error), None
    except (duckdb.OutOfMemoryException, MemoryError) as error:
        return _failure("memory", error), None
    except duckdb.Error as error:
        return _failure("duckdb", error), None
    except Exception as error:  # anything else: the parent raises it as one line, with this traceback in its log
        return _failure("other", error), None
    finally:
        timer.cancel()
        cursor.close()


def main() -> int:
    # Ctrl-C is the parent's to handle (it kills this process). When the parent exits, stdin ends and so does this
    # loop; a statement still running stops at its own time limit. (Not PR_SET_PDEATHSIG: that fires when the
    # parent's *thread* ends, and a Streamlit session's thread ends after every rerun.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the reply stream
    requests = sys.stdin.buffer
    first = read_frame(requests)
    if first is None:
        return 0
    init = pickle.loads(first)
    _cap_memory(init["memory_limit"])
    try:
        conn = _open(init)
    except BaseException as error:  # the parent raises it (StoreOpenError, a connection error ...)
        _reply(replies, _failure("open", error))
        return 1
    _reply(replies, {"status": "ready"})
    try:
        while (frame := read_frame(requests)) is not None:
            header, payload = _run(conn, pickle.loads(frame))
            _reply(replies, header, payload)
    except BrokenPipeError:  # the parent exited while a statement ran: nobody is left to answer
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
