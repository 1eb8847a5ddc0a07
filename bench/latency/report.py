"""Turns bench/latency.sh's record into Markdown: round trips per store, K and tool beside
each store's critical-path minimum, then the wall times and connections behind them.

Round trips = (median wall at the high RTT - median wall at the low RTT) / (what the
same difference adds to a one-byte echo through the proxy, measured just before). The
runs at the low RTT pay everything that does not grow with the RTT (process start-up,
CPU, the servers, the proxy's own forwarding), so the difference is the added latency
alone, counted in round trips.

    python3 report.py RESULTS_DIR
"""

import json
import pathlib
import statistics
import sys

# The fewest round trips a fresh process can need (see BENCHMARKS.md, "Under latency"):
# the identity exchange on a new connection, with the store's connections opened while it
# is in flight, then the rounds of reads. A round is as many requests as secret-sidecar
# keeps in flight (--concurrency, 8 by default; the runs do not change it); on HTTP/1.1,
# which the proxy and the fakes speak, each needs its own connection.
CONCURRENCY = 8
IDENTITY = {
    "aws": (3, "STS: TCP + TLS + AssumeRoleWithWebIdentity"),
    "azure": (3, "Entra ID: TCP + TLS + token"),
    "gcp-metadata": (2, "metadata server: TCP + token (plain HTTP)"),
    "gcp-federation": (3, "Google STS: TCP + TLS + token exchange"),
}


def minimum(store, k):
    """The identity's round trips plus the rounds of reads K secrets need: AWS reads 20
    per BatchGetSecretValue call (one GetSecretValue for K=1), the others one per
    request."""
    requests = (k + 19) // 20 if store == "aws" else k
    return IDENTITY[store][0] + (requests + CONCURRENCY - 1) // CONCURRENCY


STORES = {
    "aws": "AWS, IRSA",
    "azure": "Azure, workload identity",
    "gcp-metadata": "Google, GKE metadata server",
    "gcp-federation": "Google, workload identity federation",
}
TOOLS = [
    ("secret-sidecar", "secret-sidecar"),
    ("curl", "curl script"),
    ("boto3", "boto3"),
    ("awscli", "aws CLI"),
]


def main(directory):
    directory = pathlib.Path(directory)
    record = json.loads((directory / "results.json").read_text())
    calibration = json.loads((directory / "calibration.json").read_text())
    low, high = (str(rtt) for rtt in record["rtts_ms"])
    rtt = calibration["effective_rtt_difference_s"]

    def rounds(runs):
        added = statistics.median(runs[high]) - statistics.median(runs[low])
        return added / runs.get("rtt_s", rtt)

    present = [t for t in TOOLS if any(t[0] in by_k for s in record["stores"].values() for by_k in s.values())]
    print(
        f"Round trips counted between RTTs of {low} and {high} ms ({rtt * 1000:.2f} ms apart "
        f"through the proxy, {int(high) - int(low)} configured). Proxy check: a new TCP "
        f"connection's first exchange took {calibration['connect_rtts']:.2f} round trips "
        f"(2 expected), with TLS {calibration['tls_connect_rtts']:.2f} (3 expected); the "
        f"proxy's own cost is {calibration['0']['exchange_s'] * 1e6:.0f} µs per exchange."
    )
    print()
    print("| store, identity | K | minimum | " + " | ".join(label for _, label in present) + " |")
    print("|---|---|---|" + "---|" * len(present))
    figures = {}
    for store, by_k in record["stores"].items():
        for k, by_tool in by_k.items():
            cells = []
            for tool, _ in present:
                if tool not in by_tool:
                    cells.append("–")
                    continue
                value = rounds(by_tool[tool])
                figures[(store, int(k), tool)] = value
                cells.append(f"{value:.1f}")
            print(f"| {STORES[store]} | {k} | {minimum(store, int(k))} | " + " | ".join(cells) + " |")

    print()
    print(f"Wall time (median) at {high} and {low} ms, and the connections each endpoint")
    print(f"accepted in one run at {high} ms:")
    print()
    print(f"| store | K | tool | runs | wall at {high} ms | wall at {low} ms | connections |")
    print("|---|---|---|---|---|---|---|")
    for store, by_k in record["stores"].items():
        for k, by_tool in by_k.items():
            for tool, label in TOOLS:
                if tool not in by_tool:
                    continue
                runs = by_tool[tool]
                slow = statistics.median(runs[high]) * 1000
                fast = statistics.median(runs[low]) * 1000
                connections = ", ".join(f"{route} {n}" for route, n in sorted(runs["connections"].items()))
                print(
                    f"| {store} | {k} | {label} | {len(runs[low])} | {slow:.0f} ms | {fast:.0f} ms | {connections} |"
                )

    print()
    print("Against the targets (round trips, this run):")
    aws = [(k, v) for (s, k, t), v in figures.items() if s == "aws" and t == "secret-sidecar"]
    if aws:
        worst = max(v - minimum("aws", k) for k, v in aws)
        print(f"- AWS with IRSA, every K: at most {worst:.1f} above the minimum of {minimum('aws', 1)} (target: 1)")
    ours, boto = figures.get(("aws", 50, "secret-sidecar")), figures.get(("aws", 50, "boto3"))
    if ours and boto:
        print(f"- AWS K=50: {ours:.1f} against boto3's {boto:.1f}, {ours / boto:.2f}× (target: below 0.5×)")
    for store in ("azure", "gcp-metadata", "gcp-federation"):
        value = figures.get((store, 10, "secret-sidecar"))
        if value is not None:
            least = minimum(store, 10)
            print(f"- {STORES[store]}, K=10: {value:.1f}, {value - least:.1f} above the minimum of {least} (target: 2)")


if __name__ == "__main__":
    main(*sys.argv[1:])
