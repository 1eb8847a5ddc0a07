"""The IMDS proxy under load, for bench/imds-proxy.sh: an Entra ID token endpoint stub
(HTTPS, one token per request) and a client that times cached token requests.

    python3 imds_load.py entra CERT KEY PORTFILE     serve until killed
    python3 imds_load.py load PORT N THREADS         print latency percentiles as JSON

The client speaks plain HTTP/1.1 on a new connection per request, as a legacy IMDS caller
(curl, a shell script, an old SDK) does; its own cost is measured against a trivial
loopback server and reported beside, so the proxy's share can be read off.
"""

import http.client
import http.server
import json
import socket
import ssl
import sys
import threading
import time

TARGET = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"


def entra(cert, key, portfile):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", "0")))
            body = json.dumps({"token_type": "Bearer", "expires_in": 3599,
                               "access_token": "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJiZW5jaCJ9." + "s" * 1200}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with open(portfile, "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


def timed(port, n):
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", TARGET, headers={"Metadata": "true"})
        response = conn.getresponse()
        response.read()
        conn.close()
        samples.append(time.perf_counter() - start)
        if response.status != 200:
            raise SystemExit(f"HTTP {response.status}")
    return samples


def trivial_server():
    """A loopback server answering a fixed 200, to measure the client's own cost."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"

    def serve():
        while True:
            conn, _ = listener.accept()
            conn.recv(4096)
            conn.sendall(answer)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def percentiles(samples):
    samples = sorted(samples)
    pick = lambda q: round(samples[min(len(samples) - 1, int(q * len(samples)))] * 1000, 3)
    return {"n": len(samples), "p50_ms": pick(0.50), "p90_ms": pick(0.90),
            "p99_ms": pick(0.99), "max_ms": round(samples[-1] * 1000, 3)}


def load(port, n, threads):
    timed(port, 50)  # warm: the first token, connections, caches
    results = {"sequential": percentiles(timed(port, n))}
    gathered = []
    lock = threading.Lock()

    def worker():
        mine = timed(port, n // threads)
        with lock:
            gathered.extend(mine)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    results[f"{threads}_concurrent"] = dict(percentiles(gathered), rps=round(len(gathered) / elapsed))
    results["client_floor"] = percentiles(timed(trivial_server(), n))
    print(json.dumps(results))


if __name__ == "__main__":
    if sys.argv[1] == "entra":
        entra(*sys.argv[2:5])
    else:
        load(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
