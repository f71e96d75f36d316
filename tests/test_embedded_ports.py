"""Two embedded federations on one machine: each holds its MPC ports for the query, so they never collide."""

from __future__ import annotations

import asyncio
import errno
import socket
import threading

import pytest

import sqlmpc
from sqlmpc.oracle import run_oracle
from sqlmpc.party.pipes import reserve_ports

REGIONS = "SELECT b.region, COUNT(*) AS persons FROM bureau.persons b GROUP BY b.region ORDER BY b.region"
HF_BY_AGE = ("SELECT b.age_band, COUNT(DISTINCT p.pid) AS patients FROM hospital.patients p "
             "JOIN bureau.persons b ON b.pid = p.pid WHERE p.diagnosis = 'HF' GROUP BY b.age_band ORDER BY b.age_band")


def test_a_reserved_port_is_refused_to_others_and_served_by_the_mpc_listener():
    held = reserve_ports(2)
    try:
        ports = [s.getsockname()[1] for s in held]
        assert len(set(ports)) == 2
        for port in ports:
            other = socket.socket()
            with pytest.raises(OSError) as info:
                other.bind(("127.0.0.1", port))     # another program's bind (no SO_REUSEADDR)
            other.close()
            assert info.value.errno == errno.EADDRINUSE
        for _ in range(500):                          # nor does the kernel hand it out for port 0
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            assert probe.getsockname()[1] not in ports
            probe.close()

        async def serve_and_connect(host: str | None, port: int) -> bytes:
            # As MPyC's listener binds (mpc/session.py): SO_REUSEADDR, on loopback (an embedded party)
            # or on every interface.
            server = await asyncio.get_running_loop().create_server(
                lambda: _Echo(), host=host, port=port, reuse_address=True)
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"ping")
                answer = await reader.read(4)
                writer.close()
                return answer
            finally:
                server.close()

        assert asyncio.run(serve_and_connect("127.0.0.1", ports[0])) == b"ping"
        assert asyncio.run(serve_and_connect(None, ports[1])) == b"ping"
    finally:
        for s in held:
            s.close()


class _Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


@pytest.mark.mpc
def test_two_embedded_federations_query_at_the_same_time(demo_path, federation, union_db):
    """Both start, both run queries at once (each query on freshly reserved ports), both equal the oracle."""
    queries = [REGIONS, HF_BY_AGE, REGIONS]
    connections = [sqlmpc.connect(demo_path), sqlmpc.connect(demo_path)]
    try:
        results: dict[int, list] = {0: [], 1: []}
        failures = []

        def run(i: int) -> None:
            try:
                for sql in queries:
                    results[i].append(connections[i].execute(sql).fetchall())
            except Exception as exc:       # reported below, with the federation's number
                failures.append((i, exc))

        threads = [threading.Thread(target=run, args=(i,)) for i in results]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert not failures, failures
        expected = [run_oracle(sql, federation, union_db).rows() for sql in queries]
        assert results[0] == expected and results[1] == expected
    finally:
        for con in connections:
            con.close()
