"""Load for the admission webhook: AdmissionReview POSTs over kept-alive TLS connections,
as the API server sends them.

  steady: open loop at --rate requests per second for --duration seconds. Each request
          has a scheduled start; its latency is measured from that start, so a stall
          counts against every request queued behind it (no coordinated omission).
  max:    closed loop, --connections clients sending back to back: the throughput.

Prints one JSON object: count, errors, achieved rate, latency p50/p90/p99/max in ms.
Standard library only.
"""

import argparse
import http.client
import json
import queue
import ssl
import threading
import time


def connect(host, port, context):
    return http.client.HTTPSConnection(host, port, context=context, timeout=10)


def post(conn, body):
    conn.request("POST", "/mutate", body=body,
                 headers={"content-type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    answer = json.loads(data) if response.status == 200 else None
    return response.status == 200 and answer["response"]["allowed"] and \
        "patch" in answer["response"]


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    index = min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))
    return values[index]


def worker(args, context, body, jobs, latencies, errors, lock, stop_at):
    conn = connect(args.host, args.port, context)
    while True:
        if args.mode == "steady":
            scheduled = jobs.get()
            if scheduled is None:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            start = scheduled
        else:
            if time.perf_counter() >= stop_at:
                break
            start = time.perf_counter()
        try:
            ok = post(conn, body)
        except (OSError, http.client.HTTPException):
            ok = False
            conn.close()
            conn = connect(args.host, args.port, context)
        elapsed = time.perf_counter() - start
        with lock:
            if ok:
                latencies.append(elapsed)
            else:
                errors[0] += 1
    conn.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--body", required=True, help="an AdmissionReview JSON file")
    parser.add_argument("--mode", choices=["steady", "max"], default="steady")
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()

    context = ssl.create_default_context(cafile=args.cafile)
    with open(args.body, "rb") as f:
        body = f.read()

    # Warm up: connections, the webhook's allocator and caches.
    conn = connect(args.host, args.port, context)
    for _ in range(args.warmup):
        assert post(conn, body), "the webhook did not inject the warm-up pod"
    conn.close()

    jobs = queue.Queue()
    latencies, errors, lock = [], [0], threading.Lock()
    begin = time.perf_counter()
    stop_at = begin + args.duration
    threads = [threading.Thread(target=worker,
                                args=(args, context, body, jobs, latencies, errors,
                                      lock, stop_at))
               for _ in range(args.connections)]
    for t in threads:
        t.start()
    if args.mode == "steady":
        total = int(args.rate * args.duration)
        for i in range(total):
            jobs.put(begin + 0.05 + i / args.rate)
        for _ in threads:
            jobs.put(None)
    for t in threads:
        t.join()
    wall = time.perf_counter() - begin
    ms = [l * 1000 for l in latencies]
    print(json.dumps({
        "mode": args.mode,
        "target_rate": args.rate if args.mode == "steady" else None,
        "connections": args.connections,
        "count": len(ms),
        "errors": errors[0],
        "rate": round(len(ms) / wall, 1),
        "p50_ms": round(percentile(ms, 50), 2),
        "p90_ms": round(percentile(ms, 90), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
    }))


if __name__ == "__main__":
    main()
