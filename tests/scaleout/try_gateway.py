"""Tries `dask_gateway.GatewayCluster` against a real local gateway (not a test).

Run with the venv's Python: ``python tests/scaleout/try_gateway.py``. It prints
what each step did and how long it took, so the pytest tests built on
``gateway.py`` can assert on behaviour that was seen, not guessed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dask_gateway import BasicAuth, Gateway, GatewayCluster
from distributed import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import GatewayServer, gateway_server  # noqa: E402

PASSWORD = "kedro-gateway-test"


def step(name: str, action: Callable[[], object]) -> object:
    """Runs ``action``, printing its result (or exception) and its duration."""
    start = time.monotonic()
    try:
        result = action()
    except Exception as error:  # the point is to see what is raised
        took = time.monotonic() - start
        print(f"[{took:6.2f} s] {name}: RAISED {type(error).__module__}.", end="")
        print(f"{type(error).__qualname__}: {error}")
        return error
    print(f"[{time.monotonic() - start:6.2f} s] {name}: {result!r}")
    return result


def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition()`` held; raises after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not within {timeout} s")
        time.sleep(0.1)
    return round(time.monotonic() - start, 2)


def listening(server: GatewayServer) -> list[str]:
    """``ss -ltnp`` lines of the gateway's processes (server, proxy, cluster)."""
    pids = {f"pid={p.pid}," for p in server.processes()}
    lines = subprocess.run(
        ["ss", "-ltnpH"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return [
        " ".join(line.split()[3:]) for line in lines if any(p in line for p in pids)
    ]


def check_listening(server: GatewayServer, when: str) -> None:
    lines = listening(server)
    print(f"listening sockets {when}:")
    for line in lines:
        print("   ", line)
    bad = [line for line in lines if not line.startswith("127.0.0.1:")]
    print(f"    -> {len(lines)} sockets, not on 127.0.0.1: {bad or 'none'}")


def workers(client: Client) -> list[str]:
    return sorted(client.scheduler_info(n_workers=-1)["workers"])


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="gateway-") as tmp:
        folder = Path(tmp)
        start = time.monotonic()
        with gateway_server(folder, PASSWORD) as server:
            print(f"server started in {time.monotonic() - start:.2f} s: {server}")
            check_listening(server, "with no cluster")
            try_cluster(server)
            try_credentials(server)
            try_config(server)
            try_options(server)
            try_runner_like(server)
            step("clusters left at the end", server.list_clusters)
            exit_start = time.monotonic()
        print(f"server and clusters stopped in {time.monotonic() - exit_start:.2f} s")
        print("processes in the folder afterwards:", server.processes())


def try_cluster(server: GatewayServer) -> None:
    kwargs = server.cluster_kwargs()
    start = time.monotonic()
    cluster = GatewayCluster(**kwargs)
    print(f"GatewayCluster() returned in {time.monotonic() - start:.2f} s:")
    print(f"    name={cluster.name} scheduler={cluster.scheduler_address}")
    print(f"    dashboard={cluster.dashboard_link}")
    print(f"    shutdown_on_close={cluster.shutdown_on_close}")
    client = cluster.get_client()
    start = time.monotonic()
    cluster.scale(2)
    print("first worker after scale(2):", wait_for(lambda: workers(client), 120), "s")
    print("second worker:", wait_for(lambda: len(workers(client)) == 2, 120), "s more")
    print("worker addresses:", workers(client))
    step("client.run(os.getpid)", lambda: client.run(os.getpid))
    step("sum of map(x*x)", lambda: sum(client.gather(client.map(square, range(100)))))
    check_listening(server, "with 2 workers")
    step("cluster processes", lambda: [p.name() for p in server.cluster_processes()])

    # --- a second handle on the same, running cluster ---------------------------
    with Gateway(**kwargs) as gateway:
        other = step("Gateway.connect(name)", lambda: gateway.connect(cluster.name))
        print("    shutdown_on_close:", other.shutdown_on_close)
        with other.get_client() as other_client:
            step("task via connect()", lambda: other_client.submit(square, 7).result())
        step("connect().close()", other.close)
    named = step(
        "GatewayCluster.from_name",
        lambda: GatewayCluster.from_name(cluster.name, **kwargs),
    )
    with named.get_client() as named_client:
        step("workers via from_name", lambda: workers(named_client))
    step("from_name().close()", named.close)
    step("clusters after closing both handles", server.list_clusters)
    step("original still works", lambda: client.submit(square, 3).result())

    # --- adaptive ---------------------------------------------------------------
    step("adapt(minimum=0, maximum=2)", lambda: cluster.adapt(minimum=0, maximum=2))
    step("idle workers gone after", lambda: wait_for(lambda: not workers(client), 120))
    future = client.submit(square, 11)
    step("a task brings a worker back after", lambda: wait_for(future.done, 120))
    step("its result", future.result)
    client.close()

    # --- close() vs shutdown() --------------------------------------------------
    start = time.monotonic()
    cluster.close()  # shutdown_on_close=True for a cluster this object created
    print(f"close() of the creating object took {time.monotonic() - start:.2f} s")
    step("clusters after close()", server.list_clusters)
    step(
        "cluster processes after close()",
        lambda: wait_for(lambda: not server.cluster_processes(), 30),
    )

    kept = GatewayCluster(**kwargs, shutdown_on_close=False)
    kept.close()
    step("after close() with shutdown_on_close=False", server.list_clusters)
    again = GatewayCluster.from_name(kept.name, **kwargs)
    start = time.monotonic()
    again.shutdown()
    print(f"from_name(...).shutdown() took {time.monotonic() - start:.2f} s")
    step("clusters after shutdown()", server.list_clusters)
    step(
        "cluster processes after shutdown()",
        lambda: wait_for(lambda: not server.cluster_processes(), 30),
    )
    step(
        "GatewayCluster.from_name of a stopped cluster",
        lambda: from_name_stopped(server, kept.name),
    )


def from_name_stopped(server: GatewayServer, name: str) -> object:
    return GatewayCluster.from_name(name, **server.cluster_kwargs())


def square(x: int) -> int:
    return x * x


def try_credentials(server: GatewayServer) -> None:
    wrong = {**server.cluster_kwargs(), "auth": BasicAuth("kedro", "wrong")}
    step("GatewayCluster with a wrong password", lambda: GatewayCluster(**wrong))
    no_auth = {**server.cluster_kwargs(), "auth": None}
    step("GatewayCluster with auth=None", lambda: GatewayCluster(**no_auth))
    step("list_clusters with a wrong password", lambda: list_with(wrong))
    unknown = {**server.cluster_kwargs(), "address": "http://127.0.0.1:9"}
    step("GatewayCluster at a closed port", lambda: GatewayCluster(**unknown))


def list_with(kwargs: dict) -> object:
    with Gateway(**kwargs) as gateway:
        return gateway.list_clusters()


def try_config(server: GatewayServer) -> None:
    """Credentials from Dask config (env vars), as a YAML ``auth: basic`` needs.

    Each variant runs in a fresh interpreter: Dask reads DASK_* variables at import.
    """
    code = (
        "import json, sys\n"
        "from dask_gateway import Gateway\n"
        "kwargs = json.loads(sys.argv[1])\n"
        "with Gateway(**kwargs) as g:\n"
        "    print(type(g.auth).__name__, g.auth.username, g.list_clusters())\n"
    )
    plain = {"address": server.address, "proxy_address": server.proxy_address}
    variants = {
        "auth='basic' + DASK_GATEWAY__AUTH__KWARGS__*": (
            {**plain, "auth": "basic"},
            {
                "DASK_GATEWAY__AUTH__KWARGS__USERNAME": "kedro",
                "DASK_GATEWAY__AUTH__KWARGS__PASSWORD": server.password,
            },
        ),
        "no kwargs at all, everything from DASK_GATEWAY__*": (
            {},
            {
                "DASK_GATEWAY__ADDRESS": server.address,
                "DASK_GATEWAY__PROXY_ADDRESS": server.proxy_address,
                "DASK_GATEWAY__AUTH__TYPE": "basic",
                "DASK_GATEWAY__AUTH__KWARGS": json.dumps(
                    {"username": "kedro", "password": "{GATEWAY_PASSWORD}"}
                ),
                "GATEWAY_PASSWORD": server.password,
            },
        ),
        "password that looks like a number": (
            {**plain, "auth": "basic"},
            {"DASK_GATEWAY__AUTH__KWARGS__PASSWORD": "12345"},
        ),
        "auth='dask_gateway.auth.BasicAuth' (a class path)": (
            {**plain, "auth": "dask_gateway.auth.BasicAuth"},
            {"DASK_GATEWAY__AUTH__KWARGS__PASSWORD": server.password},
        ),
        "auth='basic', no password configured": ({**plain, "auth": "basic"}, {}),
        "proxy_address as a port number (YAML int)": (
            {
                "address": server.address,
                "proxy_address": int(server.proxy_address.rsplit(":", 1)[1]),
                "auth": "basic",
            },
            {"DASK_GATEWAY__AUTH__KWARGS__PASSWORD": server.password},
        ),
    }
    for name, (kwargs, env) in variants.items():
        start = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", code, json.dumps(kwargs)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = (done.stdout + done.stderr).strip().splitlines()
        took = time.monotonic() - start
        print(f"[{took:6.2f} s] {name}: rc={done.returncode} {output[-1:]}")


def try_options(server: GatewayServer) -> None:
    """Cluster options the server does not expose, given as keywords."""
    kwargs = server.cluster_kwargs()
    step(
        "GatewayCluster(worker_cores=1)",
        lambda: GatewayCluster(**kwargs, worker_cores=1),
    )
    with Gateway(**kwargs) as gateway:
        step("Gateway.cluster_options()", gateway.cluster_options)
    big = GatewayCluster(**kwargs)
    try:
        step("scale(5) above the limit of 2", lambda: big.scale(5))
        with big.get_client() as client:
            time.sleep(8)
            step("workers after scale(5)", lambda: len(workers(client)))
    finally:
        big.shutdown()


RUNNER_LIKE = """
import gc, json, sys
from dask_gateway import GatewayCluster
from distributed import Client

def run(close):
    cluster = GatewayCluster(**json.loads(sys.argv[1]))
    cluster.adapt(minimum=1, maximum=2)
    with Client(cluster) as client:
        print(client.submit(sum, [1, 2]).result())
    if close == "close":
        cluster.close()
    elif close == "close+workaround":
        cluster.close()
        del cluster.gateway._loop_runner  # Gateway.__del__ then skips close()

run(sys.argv[2])
gc.collect()
print("done", flush=True)
"""


def try_runner_like(server: GatewayServer) -> None:
    """What the runner does, from YAML-like kwargs: does anything reach stderr?"""
    kwargs = {"address": server.address, "proxy_address": server.proxy_address}
    env = {**os.environ, "DASK_GATEWAY__AUTH__KWARGS__PASSWORD": server.password}
    for close in ("close", "no close (GC)", "close+workaround"):
        start = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", RUNNER_LIKE, json.dumps({**kwargs, "auth": "basic"})]
            + [close],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        took = time.monotonic() - start
        last = done.stderr.strip().splitlines()[-1:] if done.stderr.strip() else []
        print(
            f"[{took:6.2f} s] runner-like, {close}: rc={done.returncode}",
            f"stdout={done.stdout.split()} Traceback on stderr: {'Traceback' in done.stderr}",
            last,
        )
        print("    clusters afterwards:", server.list_clusters())


if __name__ == "__main__":
    main()
