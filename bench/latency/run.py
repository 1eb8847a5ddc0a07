"""Runs every store, K and tool of bench/latency.sh through the latency proxy and records
wall times and connections; bench/latency/report.py turns the record into tables.

Each tool runs alternately through the routes at the high RTT and at the low one, so that
slow drifts of a shared machine touch both alike: the difference between the two is what
the added latency costs, and everything that does not grow with it (start-up, CPU, the
servers, the proxy's own forwarding) cancels out, as long as it lies on the critical path
at both RTTs. Work a process does while it waits (loading the CA roots, building clients,
TLS key exchange: some tens of milliseconds for secret-sidecar) is hidden behind a long
wait but not behind a short one, so a low RTT of 20 ms undercounts by up to 0.7 round
trips; at 60 and 120 ms (the defaults) that work is hidden at both and the counts come
out whole. The low RTT is never 0 for the same reason, and because a process that waits
on the network competes for the CPU differently from one that never waits.
Before each tool's runs, a one-byte echo through the proxy at both RTTs measures the
difference the proxy really gives right now (its timers overshoot more on a busy machine).

Each run gets a fresh output directory on tmpfs and a fresh HOME (a fresh pod: the aws
CLI would otherwise reuse the STS credentials it cached in the previous run); the first run of each tool is checked
to have written all K secrets. The proxy's counters are reset before each run and read
after it, giving the connections each tool opened per endpoint.

    python3 run.py SETUP.json RESULTS.json

SETUP (written by bench/latency.sh): ports, fakes, bench_ca, bin, venv, counts,
rtts_ms [low, high], stores, tools, runs, work, aws_token.
"""

import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MARKER = "bench-password-"


def control(port, command):
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(command.encode() + b"\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data)


class Setup:
    def __init__(self, path):
        with open(path) as handle:
            self.__dict__.update(json.load(handle))
        with open(self.ports) as handle:
            ports = json.load(handle)
        self.control = ports["control"]
        self.routes = ports["routes"]
        with open(self.fakes) as handle:
            self.fake = json.load(handle)

    def url(self, route, rtt, scheme="https"):
        return f"{scheme}://127.0.0.1:{self.routes[route][str(rtt)]}"

    def base_env(self):
        home = os.path.join(self.work, "home")
        os.makedirs(home, exist_ok=True)
        return {"PATH": os.environ["PATH"], "HOME": home, "LANG": "C.UTF-8"}


def store_env(setup, store, rtt):
    """The environment a pod of this store would have, aimed at the proxy."""
    env = setup.base_env()
    if store == "aws":
        env.update(
            AWS_ENDPOINT_URL_STS=setup.url("aws-sts", rtt),
            AWS_ENDPOINT_URL_SECRETS_MANAGER=setup.url("aws-sm", rtt),
            AWS_REGION="us-east-1",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ROLE_ARN="arn:aws:iam::000000000000:role/bench-reader",
            AWS_ROLE_SESSION_NAME="bench",
            AWS_WEB_IDENTITY_TOKEN_FILE=setup.aws_token,
            AWS_CONFIG_FILE="/nonexistent",
            AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CA_BUNDLE=setup.bench_ca,
            AWS_PAGER="",
            CURL_CA_BUNDLE=setup.bench_ca,
        )
    elif store == "azure":
        fake = setup.fake
        env.update(
            AZURE_CLIENT_ID=fake["azure_client_id"],
            AZURE_TENANT_ID=fake["azure_tenant"],
            AZURE_FEDERATED_TOKEN_FILE=fake["azure_federated_token_file"],
            AZURE_AUTHORITY_HOST=setup.url("entra", rtt) + "/",
            CURL_CA_BUNDLE=fake["testkit_ca"],
        )
    elif store.startswith("gcp"):
        env.update(SSL_CERT_FILE=setup.bench_ca, CURL_CA_BUNDLE=setup.bench_ca)
        if store == "gcp-metadata":
            env["GCE_METADATA_HOST"] = f"127.0.0.1:{setup.routes['gcp-metadata'][str(rtt)]}"
        else:
            config = os.path.join(setup.work, f"gcp-external-account-{rtt}.json")
            sts = setup.url("gcp-sts", rtt) + "/v1/token"
            with open(config, "w") as handle:
                json.dump(
                    {
                        "type": "external_account",
                        "audience": setup.fake["gcp_audience"],
                        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                        "token_url": sts,
                        "credential_source": {
                            "file": setup.fake["gcp_subject_token_file"],
                            "format": {"type": "text"},
                        },
                    },
                    handle,
                )
            env.update(
                GOOGLE_APPLICATION_CREDENTIALS=config,
                GCP_STS_URL=sts,
                GCP_AUDIENCE=setup.fake["gcp_audience"],
                GCP_SUBJECT_TOKEN_FILE=setup.fake["gcp_subject_token_file"],
            )
    return env


def command(setup, store, tool, k, rtt, out):
    """The argument vector of one run, or None when the tool does not apply."""
    if store == "aws":
        ids = [f"bench/{k}/{i}" for i in range(k)]
        refs = [f"s{i}=aws://{id}" for i, id in enumerate(ids)]
        extra = ["--ca-file", setup.bench_ca]
    elif store == "azure":
        vault = setup.url("vault", rtt)
        ids = [f"{vault}/secrets/bench-{k}-{i}?api-version=7.6" for i in range(k)]
        refs = [f"s{i}=azure://{vault}/secrets/bench-{k}-{i}" for i in range(k)]
        extra = ["--ca-file", setup.fake["testkit_ca"], "--azure-skip-challenge-resource-check"]
    else:
        endpoint = setup.url("gcp-sm", rtt)
        ids = [
            f"{endpoint}/v1/projects/bench/secrets/bench-{k}-{i}/versions/latest:access"
            for i in range(k)
        ]
        refs = [f"s{i}=gcp://bench/bench-{k}-{i}" for i in range(k)]
        extra = ["--gcp-endpoint", endpoint]
    if tool == "secret-sidecar":
        args = [setup.bin, "--output-dir", out, *extra]
        for ref in refs:
            args += ["--secret", ref]
        return args
    if tool == "curl":
        return ["sh", os.path.join(HERE, "curl.sh"), store, out, *ids]
    if store != "aws":
        return None
    if tool == "boto3":
        return [os.path.join(setup.venv, "bin/python"), os.path.join(HERE, "boto3_irsa.py"), out, *ids]
    if tool == "awscli":
        # One process per secret (the first exchanges the token at STS, the others take
        # the credentials it cached under HOME): at K=50 that is minutes per run for a
        # figure that only grows linearly (AWS_CLI_MAX_K raises the cap).
        if k > int(os.environ.get("AWS_CLI_MAX_K", "10")):
            return None
        aws = os.path.join(setup.venv, "bin/aws")
        loop = (
            'i=0; for id in "$@"; do "$AWS" secretsmanager get-secret-value --secret-id "$id" '
            '--query SecretString --output text > "$OUT/$i"; i=$((i+1)); done'
        )
        return ["sh", "-c", loop, "awscli", *ids], {"AWS": aws, "OUT": out}
    return None


def fetched(out):
    """How many seeded values the files at the top of out hold (secret-sidecar's are
    links into its staging directory below, which is not counted twice). Secret
    Manager's answers, as curl saved them, hold the value in base64."""
    count = 0
    for entry in os.scandir(out):
        if entry.is_file():
            with open(entry.path, errors="replace") as handle:
                text = handle.read()
            try:
                text = base64.b64decode(json.loads(text)["payload"]["data"]).decode()
            except (ValueError, KeyError, TypeError):
                pass
            count += text.count(MARKER)
    return count


def effective_rtt(setup):
    """How much longer a round trip takes at the high RTT than at the low one, right now:
    one-byte echoes through the proxy, medians of ten at each."""
    times = {}
    for rtt in setup.rtts_ms:
        with socket.create_connection(("127.0.0.1", setup.routes["echo"][str(rtt)])) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            samples = []
            for _ in range(11):
                started = time.perf_counter()
                sock.sendall(b"x")
                sock.recv(1)
                samples.append(time.perf_counter() - started)
            times[rtt] = statistics.median(samples[1:])
    low, high = setup.rtts_ms
    return times[high] - times[low]


def run_once(setup, store, tool, k, rtt, check):
    out = tempfile.mkdtemp(prefix="latency-out-", dir="/dev/shm")
    home = tempfile.mkdtemp(prefix="latency-home-", dir=setup.work)
    try:
        spec = command(setup, store, tool, k, rtt, out)
        args, more = spec if isinstance(spec, tuple) else (spec, {})
        env = store_env(setup, store, rtt)
        env.update(more)
        # A fresh pod: nothing cached from an earlier run (the aws CLI keeps the STS
        # credentials of an assumed role in ~/.aws/cli/cache).
        env["HOME"] = home
        control(setup.control, "reset")
        started = time.perf_counter()
        done = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - started
        counters = control(setup.control, "stats")
        if done.returncode != 0:
            sys.exit(
                f"latency: {tool} failed for {store} K={k} at {rtt} ms (exit {done.returncode}):\n"
                + done.stderr.decode(errors="replace")[-3000:]
            )
        # secret-sidecar writes each secret once (plus a value-free manifest); the curl
        # batch answers hold all of theirs; the others write one file per secret.
        got = fetched(out)
        if check and got != k:
            sys.exit(f"latency: {tool} wrote {got} of {k} secrets for {store} at {rtt} ms")
        connections = {
            key.split("@")[0]: value["connections"]
            for key, value in counters.items()
            if key.endswith(f"@{rtt}") and value["connections"]
        }
        return wall, connections
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def main(setup_path, results_path):
    setup = Setup(setup_path)
    low, high = setup.rtts_ms
    results = {"rtts_ms": setup.rtts_ms, "stores": {}}
    for store in setup.stores:
        for k in setup.counts:
            for tool in setup.tools:
                if command(setup, store, tool, k, 0, "/dev/null") is None:
                    continue
                runs = setup.runs.get(tool, setup.runs["default"])
                if isinstance(runs, dict):
                    runs = runs.get(str(k), runs["default"])
                record = {str(low): [], str(high): [], "connections": None}
                started = time.perf_counter()
                record["rtt_s"] = effective_rtt(setup)
                for n in range(runs):
                    for rtt in (high, low):
                        wall, connections = run_once(setup, store, tool, k, rtt, check=n == 0)
                        record[str(rtt)].append(wall)
                        if rtt == high and record["connections"] is None:
                            record["connections"] = connections
                results["stores"].setdefault(store, {}).setdefault(str(k), {})[tool] = record
                slow = statistics.median(record[str(high)])
                fast = statistics.median(record[str(low)])
                print(
                    f"== {store} K={k} {tool}: {runs} runs, median {slow * 1000:.0f} ms at "
                    f"{high} ms RTT, {fast * 1000:.0f} ms at {low} ms: "
                    f"{(slow - fast) / record['rtt_s']:.1f} round trips "
                    f"({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
                with open(results_path, "w") as handle:
                    json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
