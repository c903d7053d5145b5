"""An HTTP/2 client with frame-level control for tests/tests/h2.rs (PyPI h2).

Usage: h2_client.py HOST PORT TLS(0|1) CA SCENARIO

Scenarios, each on one connection:
- continuation: GET /size/N with about 20 KB of headers, which h2 sends as
  HEADERS and CONTINUATION frames (the peer's frame size is 16 KiB);
- bigpost: POST of 1 MiB to /size/N, DATA frames as flow control allows;
- reset: GET /slow/MS, then RST_STREAM(CANCEL) before the answer;
- goaway: two GETs, then GOAWAY and close;
- hold: GET /size/400 and /size/401, print READY and wait for a line on
  stdin (the test starts the agent then), then GET /size/400 again (its
  path now an index into the dynamic table) and /size/402 (a new literal).

Prints one line per request, `METHOD PATH STATUS`, with status 0 for a
request it reset.
"""

import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events


def connect(host, port, tls, ca):
    sock = socket.create_connection((host, port), timeout=10)
    if tls:
        ctx = ssl.create_default_context(cafile=ca)
        ctx.set_alpn_protocols(["h2"])
        sock = ctx.wrap_socket(sock, server_hostname="localhost")
        assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def pump(sock, conn, until, timeout=10.0):
    """Reads and handles frames until `until(events)` is true; all events."""
    events = []
    deadline = time.time() + timeout
    while not until(events):
        if time.time() > deadline:
            raise TimeoutError(f"no end after {events}")
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("peer closed")
        for ev in conn.receive_data(data):
            events.append(ev)
            if isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    return events


def headers(method, path, port, extra=()):
    return [
        (":method", method),
        (":path", path),
        (":scheme", "https"),
        (":authority", f"127.0.0.1:{port}"),
        ("user-agent", "gatescope-tests-h2"),
    ] + list(extra)


def ended(stream_id):
    def check(events):
        return any(
            isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))
            and e.stream_id == stream_id
            for e in events
        )

    return check


def status_of(events, stream_id):
    for e in events:
        if isinstance(e, h2.events.ResponseReceived) and e.stream_id == stream_id:
            return int(dict(e.headers)[":status"])
    return 0


def get(sock, conn, port, path, extra=()):
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, headers("GET", path, port, extra), end_stream=True)
    sock.sendall(conn.data_to_send())
    events = pump(sock, conn, ended(sid))
    return ["GET", path, status_of(events, sid)]


def post(sock, conn, port, path, size):
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid,
        headers("POST", path, port, [("content-length", str(size))]),
    )
    sock.sendall(conn.data_to_send())
    left = size
    events = []
    while left > 0:
        window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
        if window <= 0:
            # Wait for the peer's WINDOW_UPDATE.
            events += pump(
                sock,
                conn,
                lambda evs: any(isinstance(e, h2.events.WindowUpdated) for e in evs),
            )
            continue
        n = min(window, left)
        left -= n
        conn.send_data(sid, b"p" * n, end_stream=left == 0)
        sock.sendall(conn.data_to_send())
    events += pump(sock, conn, ended(sid))
    return ["POST", path, status_of(events, sid)]


def main():
    host, port, tls, ca, scenario = sys.argv[1:6]
    port = int(port)
    sock, conn = connect(host, port, tls == "1", ca)
    # The server's SETTINGS first.
    pump(sock, conn, lambda evs: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in evs))
    done = []
    if scenario == "continuation":
        pad = [(f"x-pad-{i}", "v" * 3000) for i in range(7)]
        done.append(get(sock, conn, port, "/size/1234", pad))
        done.append(get(sock, conn, port, "/size/1235"))
    elif scenario == "bigpost":
        done.append(post(sock, conn, port, "/size/321", 1 << 20))
        done.append(get(sock, conn, port, "/size/322"))
    elif scenario == "reset":
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers("GET", "/slow/1500", port), end_stream=True)
        sock.sendall(conn.data_to_send())
        time.sleep(0.3)
        conn.reset_stream(sid, error_code=8)  # CANCEL
        sock.sendall(conn.data_to_send())
        done.append(["GET", "/slow/1500", 0])
        done.append(get(sock, conn, port, "/size/323"))
    elif scenario == "goaway":
        done.append(get(sock, conn, port, "/size/324"))
        done.append(get(sock, conn, port, "/missing"))
        conn.close_connection()
        sock.sendall(conn.data_to_send())
    elif scenario == "hold":
        done.append(get(sock, conn, port, "/size/400"))
        done.append(get(sock, conn, port, "/size/401"))
        print("READY", flush=True)
        sys.stdin.readline()
        done.append(get(sock, conn, port, "/size/400"))
        done.append(get(sock, conn, port, "/size/402"))
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    sock.close()
    for method, path, status in done:
        print(method, path, status)


if __name__ == "__main__":
    main()
