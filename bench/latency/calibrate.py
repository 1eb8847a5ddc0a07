"""Measures what the latency proxy itself adds, for bench/latency.sh.

Against the proxy's echo routes at 0 ms and at the low and high RTTs: a new TCP
connection and its first one-byte exchange (the proxy should make that 2 RTT), then
one-byte exchanges on the open connection (1 RTT each), and a TLS connection with its
handshake and first exchange (3 RTT with TLS 1.3). At 0 ms only the proxy's own cost
remains. The high RTT less the low one, per exchange, is the round trip the runs are
measured in; a new connection should add twice that, with TLS three times.

    python3 calibrate.py PORTS.json CA.pem LOW_MS HIGH_MS OUT.json
"""

import json
import socket
import ssl
import statistics
import sys
import time

EXCHANGES = 30


def exchange(sock):
    sock.sendall(b"x")
    if sock.recv(1) != b"x":
        raise SystemExit("calibrate: the echo route did not echo")


def measure(port, context=None):
    started = time.perf_counter()
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
    exchange(sock)
    first = time.perf_counter() - started
    times = []
    for _ in range(EXCHANGES):
        started = time.perf_counter()
        exchange(sock)
        times.append(time.perf_counter() - started)
    sock.close()
    return first, statistics.median(times)


def main(ports_path, ca, low, high, out):
    with open(ports_path) as handle:
        routes = json.load(handle)["routes"]
    context = ssl.create_default_context(cafile=ca)
    result = {}
    for delay in ("0", low, high):
        connects, tls_connects, exchanges = [], [], []
        for _ in range(5):
            first, each = measure(routes["echo"][delay])
            connects.append(first)
            exchanges.append(each)
            tls_first, _ = measure(routes["echo-tls"][delay], context)
            tls_connects.append(tls_first)
        result[delay] = {
            "connect_and_exchange_s": statistics.median(connects),
            "exchange_s": statistics.median(exchanges),
            "tls_connect_and_exchange_s": statistics.median(tls_connects),
        }

    def added(key):
        return result[high][key] - result[low][key]

    effective = added("exchange_s")
    result["configured_rtt_difference_s"] = (int(high) - int(low)) / 1000
    result["effective_rtt_difference_s"] = effective
    result["connect_rtts"] = added("connect_and_exchange_s") / effective
    result["tls_connect_rtts"] = added("tls_connect_and_exchange_s") / effective
    with open(out, "w") as handle:
        json.dump(result, handle, indent=1)
    print(
        f"proxy: its own cost {result['0']['exchange_s'] * 1e6:.0f} µs per exchange at 0 ms; "
        f"{high} ms against {low} ms adds {effective * 1000:.2f} ms per exchange "
        f"({int(high) - int(low)} configured); a new connection's first exchange adds "
        f"{result['connect_rtts']:.2f} of those (2 expected), with TLS "
        f"{result['tls_connect_rtts']:.2f} (3 expected)"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
