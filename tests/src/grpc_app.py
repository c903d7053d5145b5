"""The gRPC side of tests/tests/grpc.rs (tests/src/grpc.rs runs it): a grpcio
server behind nginx's grpc_pass and a grpcio client in front of it, both on
the service of probe.proto (written beside this file and compiled with
grpc_tools.protoc by the harness; PYTHONPATH names that directory).

    python3 grpc_app.py server CALL_LOG
        Serves gs.Probe on 127.0.0.1:<free port>, prints `PORT <n>`, and
        appends `<method> <code>` to CALL_LOG as each call ends.
    python3 grpc_app.py client TARGET CA|- CHANNELS ROUNDS STREAM_N
        Over CHANNELS channels (TLS when CA is a file: its certificate is
        trusted for `localhost`), ROUNDS times each, makes one call of every
        kind in order, one at a time, and prints one JSON object per call:
        {"method": "/gs.Probe/Echo", "code": 0, "sent": n, "received": m}
        (code: the numeric status the client got; sent/received: messages).

Methods: Echo (OK), Find (NOT_FOUND, 5, with a message), Flaky (UNAVAILABLE,
14, no message), Stream (server streaming: STREAM_N messages, then OK),
Collect (client streaming: 3 messages in, one out, OK), Chat (bidi: 3 in,
each answered, OK). Message sizes vary per round (SIZES) so frames differ.
"""

import json
import sys
import threading
from concurrent import futures

import grpc

import probe_pb2
import probe_pb2_grpc

LOCK = threading.Lock()


class Probe(probe_pb2_grpc.ProbeServicer):
    def __init__(self, log):
        self.log = log

    def record(self, method, code):
        with LOCK:
            self.log.write(f"/gs.Probe/{method} {code}\n")
            self.log.flush()

    def Echo(self, request, context):
        self.record("Echo", 0)
        return probe_pb2.Msg(data=b"e" * request.size)

    def Find(self, request, context):
        self.record("Find", 5)
        context.abort(grpc.StatusCode.NOT_FOUND, "no such item")

    def Flaky(self, request, context):
        self.record("Flaky", 14)
        context.set_code(grpc.StatusCode.UNAVAILABLE)
        return probe_pb2.Msg()

    def Stream(self, request, context):
        for i in range(request.count):
            yield probe_pb2.Msg(data=b"s" * (request.size + i))
        self.record("Stream", 0)

    def Collect(self, request_iterator, context):
        total = sum(len(m.data) for m in request_iterator)
        self.record("Collect", 0)
        return probe_pb2.Msg(size=total)

    def Chat(self, request_iterator, context):
        for m in request_iterator:
            yield probe_pb2.Msg(data=m.data[::-1])
        self.record("Chat", 0)


def serve(call_log):
    log = open(call_log, "a", encoding="utf-8")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    probe_pb2_grpc.add_ProbeServicer_to_server(Probe(log), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    server.wait_for_termination()


def code_of(fn):
    """Run fn; the numeric status it ended with and its result (or None)."""
    try:
        return 0, fn()
    except grpc.RpcError as e:
        return e.code().value[0], None


# Unary payload sizes by round: 17000 bytes are two DATA frames (nginx's and
# grpcio's default frame size); 60000 bytes, and the streams' messages of up
# to 20000 bytes, make reads and writes of several frames past the 32 KiB
# head of an HTTP/2 socket's data record, which the kernel's piece records
# carry (ebpf/src/pieces.rs).
SIZES = [10, 700, 17000, 60000]


def calls(stub, rnd, stream_n):
    size = SIZES[rnd % len(SIZES)]
    out = []

    def unary(name, method):
        code, _ = code_of(lambda: method(probe_pb2.Msg(data=b"q" * size, size=size)))
        out.append({"method": f"/gs.Probe/{name}", "code": code, "sent": 1, "received": 1 if code == 0 else 0})

    unary("Echo", stub.Echo)
    unary("Find", stub.Find)
    unary("Flaky", stub.Flaky)
    small = min(size, 20000)
    code, got = code_of(lambda: list(stub.Stream(probe_pb2.StreamReq(count=stream_n, size=small))))
    out.append({"method": "/gs.Probe/Stream", "code": code, "sent": 1, "received": len(got or [])})
    msgs = [probe_pb2.Msg(data=b"c" * (small + i)) for i in range(3)]
    code, _ = code_of(lambda: stub.Collect(iter(msgs)))
    out.append({"method": "/gs.Probe/Collect", "code": code, "sent": 3, "received": 1 if code == 0 else 0})
    code, got = code_of(lambda: list(stub.Chat(iter(msgs))))
    out.append({"method": "/gs.Probe/Chat", "code": code, "sent": 3, "received": len(got or [])})
    return out


def client(target, ca, channels, rounds, stream_n):
    # No retries: each call the client makes is one stream on the wire.
    options = [("grpc.enable_retries", 0)]
    for _ in range(channels):
        if ca == "-":
            channel = grpc.insecure_channel(target, options=options)
        else:
            with open(ca, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            options_tls = options + [("grpc.ssl_target_name_override", "localhost")]
            channel = grpc.secure_channel(target, creds, options=options_tls)
        stub = probe_pb2_grpc.ProbeStub(channel)
        for rnd in range(rounds):
            for call in calls(stub, rnd, stream_n):
                print(json.dumps(call), flush=True)
        channel.close()


def main():
    if sys.argv[1] == "server":
        serve(sys.argv[2])
    elif sys.argv[1] == "client":
        target, ca, channels, rounds, stream_n = sys.argv[2:7]
        client(target, ca, int(channels), int(rounds), int(stream_n))
    else:
        sys.exit(f"unknown mode {sys.argv[1]!r}")


if __name__ == "__main__":
    main()
