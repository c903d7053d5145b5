"""The TLS side of the test client (tests/src/tls.rs): a local forwarder that
gives each plain TCP connection from the Rust client (client.rs's Conn) a TLS
connection of its own to the gateway, and moves the plaintext verbatim both
ways. Standard library only (python3's ssl module).

    python3 tls_forwarder.py SERVER_HOST SERVER_PORT CA_FILE SERVER_NAME

Prints `PORT <n>` once it listens on 127.0.0.1:<n>. For every connection
accepted there it connects to SERVER_HOST:SERVER_PORT, completes the TLS
handshake (the server's certificate checked against CA_FILE for SERVER_NAME),
then writes one line to the plain connection before any data:

    OK <local ip>:<local port> <TLS version> <cipher>\n   (the TLS connection's
        client address: what nginx logs as $remote_addr:$remote_port)
    ERR <reason>\n                                          (and closes)

From then on:
- each read from the plain side (up to 1 MiB) is one SSL_write of those bytes
  to the gateway: a request the client wrote in one write (a pipeline, a head
  with its body) goes out in one call, as records of at most 16 KiB; a client
  that pauses between writes pauses the TLS writes too;
- plaintext read from the gateway is written to the plain side as it comes;
- the gateway's close (close_notify or EOF) becomes EOF (shutdown SHUT_WR) on
  the plain side;
- the plain side's EOF (the client closed or aborted) closes the TLS
  connection at once (no close_notify; the TCP FIN is what tells nginx that a
  client gave up, its 499).

So the bytes the Rust client counts are exactly the plaintext bytes of the TLS
connection, request by request. One thread per connection, a single-threaded
select loop with a non-blocking SSL socket (an SSL object must not be read and
written from two threads at once).
"""

import select
import socket
import ssl
import sys
import threading

READ_MAX = 1 << 20
IO_TIMEOUT = 10.0
IDLE_TIMEOUT = 120.0


def tls_send_all(tls, data):
    """Write all of `data` with SSL_write on a non-blocking socket, retrying
    with the same buffer after WANT_WRITE/WANT_READ."""
    view = memoryview(data)
    while view:
        try:
            n = tls.send(view)
        except ssl.SSLWantWriteError:
            select.select([], [tls], [], IO_TIMEOUT)
            continue
        except ssl.SSLWantReadError:
            select.select([tls], [], [], IO_TIMEOUT)
            continue
        view = view[n:]


def close_quietly(s):
    try:
        s.close()
    except OSError:
        pass


def serve(plain, ctx, server, server_name):
    tls = None
    try:
        plain.settimeout(IO_TIMEOUT)
        try:
            raw = socket.create_connection(server, timeout=IO_TIMEOUT)
            tls = ctx.wrap_socket(raw, server_hostname=server_name)
        except (OSError, ssl.SSLError) as e:
            plain.sendall(("ERR %s\n" % e).replace("\n", " ").encode() + b"\n")
            return
        host, port = tls.getsockname()[:2]
        plain.sendall(
            ("OK %s:%d %s %s\n" % (host, port, tls.version(), tls.cipher()[0])).encode()
        )
        tls.setblocking(False)
        tls_open = True
        while True:
            pending = tls_open and tls.pending() > 0
            watch = [plain] + ([tls] if tls_open else [])
            r, _, _ = select.select(watch, [], [], 0 if pending else IDLE_TIMEOUT)
            if not r and not pending:
                return  # idle too long: give up on this connection
            if tls_open and (pending or tls in r):
                try:
                    data = tls.recv(READ_MAX)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    data = None  # a record not complete yet, or a ticket
                except (ssl.SSLError, OSError):
                    data = b""  # reset: as EOF for the client
                if data == b"":
                    tls_open = False
                    try:
                        plain.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                elif data:
                    plain.sendall(data)
            if plain in r:
                data = plain.recv(READ_MAX)
                if not data:
                    return  # the client closed or aborted: close the TLS side
                if tls_open:
                    tls_send_all(tls, data)
    except (OSError, ssl.SSLError) as e:
        sys.stderr.write("connection error: %r\n" % (e,))
    finally:
        if tls is not None:
            close_quietly(tls)
        close_quietly(plain)


def main():
    host, port, ca_file, server_name = sys.argv[1:5]
    ctx = ssl.create_default_context(cafile=ca_file)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    sys.stdout.write("PORT %d\n" % listener.getsockname()[1])
    sys.stdout.flush()
    while True:
        plain, _ = listener.accept()
        t = threading.Thread(
            target=serve, args=(plain, ctx, (host, int(port)), server_name), daemon=True
        )
        t.start()


if __name__ == "__main__":
    main()
