"""Several devices and several processes, on JAX's own runtime (``jax.sharding``,
``jax.distributed``).

Data parallelism: one mesh with a single axis ``data`` (:data:`nerfkit.core.sharding.DATA_AXIS`)
over every device of every process. Parameters, optimiser state and the training pixels are
replicated; each ray batch is split along ``data`` (each device draws and renders its own share
of the global batch inside the jit'd step, see :func:`nerfkit.core.sharding.shard_batch`) and
XLA's SPMD partitioner adds the all-reduce of the gradients. With one device the mesh has one
device and the program is the single-device one.

Processes: ``nerfkit train ... --num-processes N`` on one machine starts ``N`` local processes
itself (:func:`launch_local`); with ``--process-id`` and ``--coordinator-address`` (or
``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``, or a SLURM / Open MPI job
that ``jax.distributed`` recognises) a process joins a run started elsewhere
(:func:`initialize`). Every process loads the dataset and runs the same steps; only process 0
writes logs, metrics, configs and renders; checkpoints are written by all of them together through
orbax. See ``docs/DISTRIBUTED.md``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from nerfkit.core.sharding import DATA_AXIS
from nerfkit.errors import ConfigError

#: Environment variables read for the process layout (besides JAX's cluster detection).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r}: expected an integer") from None


def _cluster_process_id() -> Optional[int]:
    """The rank a SLURM (``srun``) or Open MPI (``mpirun``) launch gave this process, if any."""
    if all(v in os.environ for v in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
                                     "SLURM_PROCID", "SLURM_LOCALID")):
        if (_env_int("SLURM_NTASKS") or 1) > 1:
            return _env_int("SLURM_PROCID")
    if "OMPI_MCA_orte_hnp_uri" in os.environ and (_env_int("OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return _env_int("OMPI_COMM_WORLD_RANK")
    return None


def plan(num_processes: Optional[int], process_id: Optional[int],
         coordinator_address: Optional[str]) -> tuple[str, Optional[int]]:
    """How this invocation runs, and with how many processes (``None``: unknown yet):
    ``"single"`` (one process), ``"launch"`` (start that many local processes,
    :func:`launch_local`) or ``"join"`` (be one process of a multi-process run,
    :func:`initialize`). Flags win over environment variables."""
    n = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    pid = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    addr = coordinator_address or os.environ.get(ENV_COORDINATOR)
    cluster_pid = _cluster_process_id()
    if n is not None and n < 1:
        raise ConfigError(f"--num-processes must be >= 1, got {n}")
    if pid is not None and (pid < 0 or (n is not None and pid >= n)):
        raise ConfigError(f"--process-id must be in [0, --num-processes), got {pid} of {n}")
    if n == 1:
        return "single", 1
    if n is None and pid is None and addr is None:
        return ("join", None) if cluster_pid is not None else ("single", 1)
    if n is not None and pid is None and cluster_pid is None:
        if addr is not None:
            raise ConfigError("--coordinator-address without --process-id: give every process "
                              "its --process-id, or leave both out to let --num-processes start "
                              "the local processes")
        return "launch", n
    if pid is not None and n is None and cluster_pid is None:
        raise ConfigError("--process-id needs --num-processes (or JAX_NUM_PROCESSES)")
    return "join", n


def initialize(num_processes: Optional[int], process_id: Optional[int],
               coordinator_address: Optional[str]) -> None:
    """Joins a multi-process run (``jax.distributed.initialize``); must run before JAX starts
    its backends. Unset values come from ``JAX_*`` variables or JAX's cluster detection."""
    if jax.distributed.is_initialized():
        return
    n = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    pid = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    try:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=n,
                                   process_id=pid)
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"cannot join the multi-process run (coordinator "
                          f"{coordinator_address or os.environ.get(ENV_COORDINATOR)}, process "
                          f"{pid} of {n}): {str(e).splitlines()[0] if str(e) else e}") from e


# -- mesh and placement ---------------------------------------------------------------------------

def data_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """The ``('data',)`` mesh over ``devices`` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def mesh_size(mesh: Optional[Mesh]) -> int:
    return 1 if mesh is None else int(mesh.devices.size)


def put(tree: Any, sharding: NamedSharding) -> Any:
    """Places a pytree of arrays whose values are the same on every process (a freshly built model,
    a restored checkpoint, a dataset every process loaded, rays every process computed) with
    ``sharding``. Arrays already placed so are kept as they are; with several processes the
    global array is assembled from each process's copy (``jax.make_array_from_process_local_data``,
    each process supplying the shards its devices hold)."""
    multi = jax.process_count() > 1

    def place(x):
        if x is None:
            return None
        if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
            return x
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(place(jax.random.key_data(x)), impl=impl)
        if not multi:
            return jax.device_put(x, sharding)
        local = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, local, local.shape)

    return jax.tree_util.tree_map(place, tree)


# -- processes ------------------------------------------------------------------------------------

def process_index() -> int:
    return jax.process_index()


def is_main() -> bool:
    """Whether this is process 0 (the one that writes logs, metrics and renders)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier ``name`` (no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def from_main(value: float) -> float:
    """Process 0's ``value`` on every process (identity with one process): decisions that depend
    on wall-clock time (time limits, learning-rate schedules over minutes) must agree."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils
    return float(multihost_utils.broadcast_one_to_all(np.asarray(value, np.float32)))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_local(argv: Sequence[str], num_processes: int, grace_s: float = 10.0) -> int:
    """Runs ``nerfkit <argv>`` as ``num_processes`` local processes of one run and waits.

    Each gets ``--process-id i --coordinator-address 127.0.0.1:<free port>``. Process 0 writes to
    this terminal; the others' output goes to temporary files, shown only if one of them fails
    while process 0 does not say why. When a process fails, the others get ``grace_s`` seconds to
    end on their own (a user error ends all of them alike) and are then terminated. Returns the
    exit status: process 0's, or that of the first process that failed.
    """
    addr = f"127.0.0.1:{_free_port()}"
    procs: list[subprocess.Popen] = []
    logs: list[Any] = []
    for i in range(num_processes):
        cmd = [sys.executable, "-m", "nerfkit.cli", *argv, "--process-id", str(i),
               "--coordinator-address", addr]
        log = None if i == 0 else tempfile.TemporaryFile(mode="w+", prefix=f"nerfkit-p{i}-")
        logs.append(log)
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT if log else None))
    killed: set[int] = set()
    first_failure: Optional[int] = None
    deadline: Optional[float] = None
    try:
        while any(p.poll() is None for p in procs):
            for i, p in enumerate(procs):
                rc = p.poll()
                if rc not in (None, 0) and first_failure is None:
                    first_failure, deadline = i, time.monotonic() + grace_s
            if deadline is not None and time.monotonic() > deadline:
                for i, p in enumerate(procs):
                    if p.poll() is None:
                        p.terminate()
                        killed.add(i)
                deadline = time.monotonic() + 3600.0
            time.sleep(0.1)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        return 130
    codes = [p.wait() for p in procs]
    main_rc = codes[0]
    if first_failure is None:  # all of them ended between two polls
        first_failure = next((i for i, rc in enumerate(codes) if rc != 0), None)
    if first_failure is None:
        return 0
    if main_rc == 0 or 0 in killed:  # process 0 did not report the failure: show the others'
        for i, (rc, log) in enumerate(zip(codes, logs)):
            if i == 0 or rc == 0 or i in killed or log is None:
                continue
            log.seek(0)
            tail = log.read()[-4000:].rstrip()
            print(f"nerfkit: process {i} of {num_processes} failed (exit status {rc}):\n{tail}",
                  file=sys.stderr)
    return main_rc if (main_rc != 0 and 0 not in killed) else (codes[first_failure] or 1)
