"""A loopback TCP proxy that adds network latency, for bench/latency.sh.

This kernel has no netem, so latency is added in user space: every chunk read from one
side is held for the one-way delay (RTT / 2) before it is written to the other, and the
bytes a client sends on a new connection are held until one round trip after it opened,
standing in for the TCP handshake (SYN, SYN-ACK) that a real connect() waits for. A client
that opens a connection early and writes later therefore pays no handshake wait, as on a
real network. Bandwidth, loss and slow start are not modelled: every answer here is a few
kilobytes, inside TCP's initial window.

Each route listens once per configured RTT on 127.0.0.1 and forwards to an upstream that
must be a loopback address. A route in `tls` mode terminates TLS right behind the delay
(an in-process TLS server with the benchmark's CA, ALPN http/1.1, TLS 1.3 where the client
offers it) and speaks plain HTTP to its upstream, so the TLS handshake crosses the delay as
it would on the internet; a `tcp` route passes bytes through (the upstream speaks TLS
itself, or is plain HTTP like a metadata server). The upstream `echo` is the proxy's own
echo server, for calibration.

    python3 proxy.py CONFIG.json PORTS.json

CONFIG: {"rtts_ms": [0, 20], "cert": PEM, "key": PEM,
         "routes": [{"name": "aws-sts", "mode": "tls", "upstream": "127.0.0.1:4566"}, ...]}
PORTS (written once listening): {"control": PORT, "routes": {"aws-sts": {"0": PORT, ...}}}

The control port takes one line, `stats` or `reset`, and answers one JSON line: for each
route and RTT, the connections accepted and the bytes carried since the last reset.
"""

import asyncio
import ipaddress
import json
import os
import selectors
import ssl
import sys

COUNTERS = {}
# The connection handlers, held here: asyncio keeps only a weak reference to a task.
HANDLERS = set()


def held(handler):
    async def handle(reader, writer):
        task = asyncio.current_task()
        HANDLERS.add(task)
        try:
            await handler(reader, writer)
        finally:
            HANDLERS.discard(task)

    return handle


def counter(route, rtt):
    return COUNTERS.setdefault(f"{route}@{rtt}", {"connections": 0, "up": 0, "down": 0})


def loopback(address):
    host, _, port = address.rpartition(":")
    if not ipaddress.ip_address(host.strip("[]")).is_loopback:
        sys.exit(f"proxy: upstream {address} is not a loopback address; refusing")
    return host.strip("[]"), int(port)


async def delayed_pipe(reader, writer, one_way, opened, count, key):
    """Copies reader to writer, each chunk delivered one_way after it arrived, and not
    before `opened` (the moment the emulated TCP handshake completes) plus one_way."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def read():
        try:
            while True:
                data = await reader.read(65536)
                queue.put_nowait((loop.time(), data))
                if not data:
                    return
        except (ConnectionError, OSError):
            queue.put_nowait((loop.time(), b""))

    reading = asyncio.ensure_future(read())
    try:
        while True:
            arrived, data = await queue.get()
            due = max(arrived, opened) + one_way
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            count[key] += len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        reading.cancel()


async def plain_pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def close(writer):
    try:
        writer.close()
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass


def delaying(route, rtt_ms, target):
    """A connection handler that delays both ways and forwards to target (host, port)."""
    one_way = rtt_ms / 2000.0

    async def handle(client_reader, client_writer):
        loop = asyncio.get_running_loop()
        opened = loop.time() + 2 * one_way
        count = counter(route, rtt_ms)
        count["connections"] += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            await close(client_writer)
            return
        await asyncio.gather(
            delayed_pipe(client_reader, up_writer, one_way, opened, count, "up"),
            delayed_pipe(up_reader, client_writer, one_way, 0.0, count, "down"),
        )
        await close(up_writer)
        await close(client_writer)

    return held(handle)


def forwarding(target):
    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            await close(writer)
            return
        await asyncio.gather(plain_pipe(reader, up_writer), plain_pipe(up_reader, writer))
        await close(up_writer)
        await close(writer)

    return held(handle)


async def echo(reader, writer):
    await plain_pipe(reader, writer)
    await close(writer)


async def control(reader, writer):
    line = (await reader.readline()).decode().strip()
    if line == "reset":
        for count in COUNTERS.values():
            count.update(connections=0, up=0, down=0)
    writer.write((json.dumps(COUNTERS) + "\n").encode())
    await writer.drain()
    await close(writer)


async def main(config_path, ports_path):
    with open(config_path) as handle:
        config = json.load(handle)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config["cert"], config["key"])
    context.set_alpn_protocols(["http/1.1"])

    servers, ports = [], {}
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    servers.append(echo_server)
    echo_target = ("127.0.0.1", echo_server.sockets[0].getsockname()[1])
    for route in config["routes"]:
        name, mode = route["name"], route["mode"]
        upstream = echo_target if route["upstream"] == "echo" else loopback(route["upstream"])
        target = upstream
        if mode == "tls":
            terminator = await asyncio.start_server(
                forwarding(upstream), "127.0.0.1", 0, ssl=context
            )
            servers.append(terminator)
            target = ("127.0.0.1", terminator.sockets[0].getsockname()[1])
        elif mode != "tcp":
            sys.exit(f"proxy: route {name}: unknown mode {mode}")
        for rtt in config["rtts_ms"]:
            server = await asyncio.start_server(delaying(name, rtt, target), "127.0.0.1", 0)
            servers.append(server)
            ports.setdefault(name, {})[str(rtt)] = server.sockets[0].getsockname()[1]
            counter(name, rtt)
    control_server = await asyncio.start_server(control, "127.0.0.1", 0)
    servers.append(control_server)
    with open(ports_path + ".tmp", "w") as handle:
        json.dump({"control": control_server.sockets[0].getsockname()[1], "routes": ports}, handle)
    os.replace(ports_path + ".tmp", ports_path)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    # select() takes its timeout in microseconds where epoll rounds up to whole
    # milliseconds: with epoll every held chunk would arrive up to 1 ms late.
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        loop.run_until_complete(main(sys.argv[1], sys.argv[2]))
    except KeyboardInterrupt:
        pass
