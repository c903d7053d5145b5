//! Self-test of the TUN peer (`gatescope_tests::tun`): as a client against a
//! plain kernel TcpListener on 0.0.0.0 (handshake timing, exact packet counts, a
//! forced kernel retransmission, and RSTs both ways), and as a server accepting
//! a kernel TcpStream's connection to the fake peer address (exact counts, a
//! forced retransmission, a reset). Needs root and a usable /dev/net/tun; it
//! fails (never skips) without them.

use anyhow::{ensure, Context, Result};
use gatescope_tests::tun::{
    complete_response as complete, netstat_tcpext, snmp_tcp, TunNet, WireCount,
};
use gatescope_tests::util;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

/// A listener on 0.0.0.0:<free port> serving one connection with `serve`.
fn server<R: Send + 'static>(
    serve: impl FnOnce(TcpStream) -> Result<R> + Send + 'static,
) -> Result<(u16, JoinHandle<Result<R>>)> {
    let l = TcpListener::bind("0.0.0.0:0").context("binding 0.0.0.0:0")?;
    let port = l.local_addr()?.port();
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().context("accept")?;
        s.set_read_timeout(Some(T))?;
        serve(s)
    });
    Ok((port, h))
}

fn join<R>(h: JoinHandle<Result<R>>) -> Result<R> {
    h.join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))?
}

fn response(body_len: usize) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\n\r\n").into_bytes();
    r.extend((0..body_len).map(|i| b'a' + (i % 26) as u8));
    r
}

#[test]
fn handshake_exchange_and_exact_counts() -> Result<()> {
    const BODY: usize = 3000;
    let net = TunNet::create()?;
    let (port, h) = server(|mut s| {
        // Read the request head, reply, then read to EOF and close.
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf)?;
            ensure!(n > 0, "EOF before the request head");
            req.extend_from_slice(&buf[..n]);
        }
        let resp = response(BODY);
        s.write_all(&resp)?;
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)?;
        Ok((req.len() + rest.len(), resp.len()))
    })?;

    let mut c = net.connect(port, Duration::from_millis(50))?;
    let hs = c.handshake();
    let request = format!(
        "GET /x HTTP/1.1\r\nHost: {}:{port}\r\n\r\n",
        net.kernel_addr()
    );
    c.send(request.as_bytes())?;
    let reply = c.recv(complete, T)?;
    c.close()?;
    // Anything late (a delayed ACK, a probe) would show up here.
    net.settle(Duration::from_millis(400))?;
    let (server_read, server_written) = join(h)?;
    let counts = c.counts();
    let totals = net.totals(port);
    eprintln!(
        "handshake {hs:?}; request {} B, reply {} B; conn {counts:?}",
        request.len(),
        reply.len()
    );

    // The 50 ms is ours (the ACK is withheld that long); what comes on top is
    // our own thread's scheduling, which a loaded CI machine stretches.
    ensure!(
        (Duration::from_millis(50)..=Duration::from_millis(250)).contains(&hs),
        "handshake {hs:?} not in [50 ms, 250 ms]"
    );
    ensure!(server_read == request.len(), "server read {server_read}");
    ensure!(
        reply.len() == server_written && reply == response(BODY),
        "client got {} bytes, server wrote {server_written}",
        reply.len()
    );
    ensure!(counts == totals, "conn {counts:?} != totals {totals:?}");
    // The interface's own counters see every packet, TCP or not: nothing else crossed.
    net.ensure_only(&totals)?;

    // The exchange, packet by packet (IP total lengths; we send only MSS on the
    // SYN, so the SYN-ACK carries only MSS too, and no timestamps anywhere):
    //  in:  SYN (44), ACK (40), request (40+R), one ACK per reply segment,
    //       our FIN (40), the ACK of the kernel's FIN (40).
    //  out: SYN-ACK (44); the ACK of the request (40) - a new connection is in
    //       quick-ACK mode, so it is sent at once, before the server's reply;
    //       the reply in MSS-sized segments (1460 + 1460 + rest, with 40 each);
    //       FIN|ACK (40) - the ACK of our FIN is delayed (the kernel enters
    //       pingpong mode on a FIN) and the server usually closes within the
    //       40 ms delayed-ACK timer, so it rides on the server's FIN; when the
    //       server thread is slower than that (a loaded CI machine), the ACK
    //       goes alone first (40).
    let segs = reply.len().div_ceil(1460) as u64;
    let r = request.len() as u64;
    let lone_ack = counts.packets_out.saturating_sub(3 + segs).min(1);
    let expected = WireCount {
        packets_in: 5 + segs,
        bytes_in: 44 + 40 + (40 + r) + 40 * segs + 40 + 40,
        packets_out: 3 + segs + lone_ack,
        bytes_out: 44 + 40 + (40 * segs + reply.len() as u64) + 40 * lone_ack + 40,
        rst_in: 0,
        rst_out: 0,
        syn_in: 1,
        syn_out: 1,
    };
    ensure!(
        counts == expected,
        "counts {counts:?}\n expected {expected:?}"
    );
    ensure!(
        c.retransmits_seen() == 0,
        "{} retransmits",
        c.retransmits_seen()
    );
    Ok(())
}

#[test]
fn withheld_ack_forces_a_kernel_retransmission() -> Result<()> {
    const REPLY: &[u8] = b"small reply, sent once and dropped once";
    let net = TunNet::create()?;
    let (port, h) = server(|mut s| {
        s.write_all(REPLY)?;
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)?;
        Ok(rest.len())
    })?;
    let retrans_before = snmp_tcp("RetransSegs")?;
    let probes_before = netstat_tcpext("TCPLossProbes")?;
    let timeouts_before = netstat_tcpext("TCPTimeouts")?;
    let mut c = net.connect(port, Duration::ZERO)?;
    let t0 = std::time::Instant::now();
    let got = c.recv_dropping_first(|b| b.len() >= REPLY.len(), T)?;
    let waited = t0.elapsed();
    c.close()?;
    net.settle(Duration::from_millis(300))?;
    let retrans = snmp_tcp("RetransSegs")? - retrans_before;
    let probes = netstat_tcpext("TCPLossProbes")? - probes_before;
    let timeouts = netstat_tcpext("TCPTimeouts")? - timeouts_before;
    ensure!(join(h)? == 0, "server read data");
    let seen = c.retransmits_seen();
    eprintln!(
        "retransmits seen {seen}, kernel RetransSegs +{retrans}, TCPLossProbes +{probes}, TCPTimeouts +{timeouts}, \
         data after {waited:?}; conn {:?}",
        c.counts()
    );
    ensure!(got == REPLY, "data corrupted: {got:?}");
    ensure!(seen >= 1, "no retransmission seen");
    ensure!(
        retrans >= seen,
        "kernel counted {retrans} retransmitted segments, the client saw {seen}"
    );
    ensure!(c.counts() == net.totals(port), "conn and totals differ");
    Ok(())
}

#[test]
fn server_abort_reaches_client_as_rst() -> Result<()> {
    let net = TunNet::create()?;
    let (port, h) = server(|s| {
        util::set_linger_zero(s.as_raw_fd())?;
        drop(s); // close with linger 0: RST instead of FIN
        Ok(())
    })?;
    let mut c = net.connect(port, Duration::ZERO)?;
    c.wait_reset(T)?;
    join(h)?;
    net.settle(Duration::from_millis(300))?;
    let counts = c.counts();
    eprintln!("server abort: conn {counts:?}");
    ensure!(counts.rst_out == 1 && counts.rst_in == 0, "{counts:?}");
    ensure!(counts == net.totals(port), "conn and totals differ");
    Ok(())
}

#[test]
fn client_reset_reaches_server_as_econnreset() -> Result<()> {
    let net = TunNet::create()?;
    let (accepted_tx, accepted_rx) = mpsc::channel();
    let (port, h) = server(move |mut s| {
        accepted_tx.send(())?;
        let mut buf = [0u8; 16];
        Ok(s.read(&mut buf).map_err(|e| e.kind()))
    })?;
    let mut c = net.connect(port, Duration::ZERO)?;
    // Reset only once the server holds the socket, so its read sees the reset.
    accepted_rx.recv_timeout(T).context("server accept")?;
    c.reset()?;
    let read = join(h)?;
    net.settle(Duration::from_millis(300))?;
    let counts = c.counts();
    eprintln!("client reset: server read {read:?}; conn {counts:?}");
    ensure!(
        read == Err(ErrorKind::ConnectionReset),
        "server read returned {read:?}"
    );
    ensure!(counts.rst_in == 1 && counts.rst_out == 0, "{counts:?}");
    ensure!(counts == net.totals(port), "conn and totals differ");
    Ok(())
}

#[test]
fn close_after_the_server_closed_first() -> Result<()> {
    const REPLY: &[u8] = b"bye";
    let net = TunNet::create()?;
    let (port, h) = server(|mut s| {
        s.write_all(REPLY)?;
        Ok(()) // dropped: the server's FIN goes out first
    })?;
    let mut c = net.connect(port, Duration::ZERO)?;
    let got = c.recv(|b| b.len() >= REPLY.len(), T)?;
    join(h)?;
    c.pump_for(Duration::from_millis(50))?; // take the FIN in before we close
    ensure!(c.fin_received(), "no FIN from the server");
    c.close()?;
    net.settle(Duration::from_millis(300))?;
    let counts = c.counts();
    eprintln!("server closed first: conn {counts:?}");
    ensure!(got == REPLY, "got {got:?}");
    // in: SYN, ACK, ACK of the data, ACK of the FIN, our FIN;
    // out: SYN-ACK, data, FIN, ACK of our FIN.
    ensure!(
        (counts.packets_in, counts.packets_out) == (5, 4),
        "{counts:?}"
    );
    ensure!(counts == net.totals(port), "conn and totals differ");
    Ok(())
}

/// The fake peer's port in the accept tests (any port: the address is ours alone).
const PEER_PORT: u16 = 8080;

/// A kernel client thread: connect to `addr`, write `request`, read one
/// complete response, then close (FIN). Returns (its port, the response).
fn kernel_client(addr: SocketAddr, request: Vec<u8>) -> JoinHandle<Result<(u16, Vec<u8>)>> {
    std::thread::spawn(move || {
        let mut s =
            TcpStream::connect_timeout(&addr, T).with_context(|| format!("connect {addr}"))?;
        s.set_read_timeout(Some(T))?;
        let port = s.local_addr()?.port();
        s.write_all(&request)?;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !complete(&got) {
            let n = s.read(&mut buf)?;
            ensure!(n > 0, "EOF after {} response bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        Ok((port, got))
    })
}

fn head_complete(b: &[u8]) -> bool {
    b.windows(4).any(|w| w == b"\r\n\r\n")
}

#[test]
fn accept_kernel_connection_exact_counts() -> Result<()> {
    const BODY: usize = 3000;
    let net = TunNet::create()?;
    net.listen(PEER_PORT)?;
    let addr = SocketAddr::from((net.peer_addr(), PEER_PORT));
    let request = format!("GET /x HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    let h = kernel_client(addr, request.clone());

    let mut c = net.accept(PEER_PORT, T)?;
    let got_request = c.recv(head_complete, T)?;
    let resp = response(BODY);
    c.send(&resp)?;
    // The client closes once it has the response; then we close.
    c.wait_fin(T)?;
    let (client_port, got_response) = join(h)?;
    c.close()?;
    net.settle(Duration::from_millis(400))?;
    let counts = c.counts();
    let totals = net.peer_totals(PEER_PORT);
    eprintln!(
        "accepted {}:{client_port} -> {addr}; handshake {:?}; request {} B, response {} B; \
         conn {counts:?}",
        net.kernel_addr(),
        c.handshake(),
        request.len(),
        resp.len()
    );
    ensure!(
        c.remote_port() == client_port,
        "remote port {}",
        c.remote_port()
    );
    ensure!(got_request == request, "request corrupted: {got_request:?}");
    ensure!(got_response == resp, "response corrupted");
    ensure!(
        counts == totals,
        "conn {counts:?} != peer totals {totals:?}"
    );
    ensure!(
        counts == net.totals(client_port),
        "conn {counts:?} != totals of the kernel's port {:?}",
        net.totals(client_port)
    );
    net.ensure_only(&totals)?;

    // Packet by packet (IP total lengths). The kernel's SYN carries MSS, SACK
    // permitted, timestamps and window scale (20 option bytes); our SYN-ACK only
    // MSS, so nothing after it has options.
    //  out (kernel -> peer): SYN (60), ACK (40), request (40+R), one ACK per
    //       response segment (40 each; a new connection is in quick-ACK mode)
    //       or fewer (a client slow to read, on a loaded machine, acks two or
    //       three segments at once: CI saw 1 ACK for 3), FIN (40), the ACK of
    //       our FIN (40: sent at once in FIN_WAIT2).
    //  in (peer -> kernel): SYN-ACK (44), ACK of the request (40), the response
    //       in MSS-sized segments (40 + data each), ACK of the FIN (40), our FIN (40).
    let segs = resp.len().div_ceil(1460) as u64;
    let r = request.len() as u64;
    // The kernel's ACKs of the response: 1 to `segs`, whatever it sent.
    let acks = counts.packets_out.saturating_sub(5).clamp(1, segs);
    let expected = WireCount {
        packets_in: 4 + segs,
        bytes_in: 44 + 40 + (40 * segs + resp.len() as u64) + 40 + 40,
        packets_out: 5 + acks,
        bytes_out: 60 + 40 + (40 + r) + 40 * acks + 40 + 40,
        rst_in: 0,
        rst_out: 0,
        syn_in: 1,
        syn_out: 1,
    };
    ensure!(
        counts == expected,
        "counts {counts:?}\n expected {expected:?}"
    );
    ensure!(
        c.retransmits_seen() == 0,
        "{} retransmits",
        c.retransmits_seen()
    );
    Ok(())
}

#[test]
fn accepted_connection_retransmission_and_reset() -> Result<()> {
    const REQUEST: &[u8] = b"a request the peer drops once\r\n\r\n";
    let net = TunNet::create()?;
    net.listen(PEER_PORT)?;
    let addr = SocketAddr::from((net.peer_addr(), PEER_PORT));
    let (done_tx, done_rx) = mpsc::channel();
    let h = std::thread::spawn(move || -> Result<Result<usize, ErrorKind>> {
        let mut s = TcpStream::connect_timeout(&addr, T)?;
        s.set_read_timeout(Some(T))?;
        s.write_all(REQUEST)?;
        done_tx.send(())?;
        let mut buf = [0u8; 16];
        Ok(s.read(&mut buf).map_err(|e| e.kind()))
    });
    let mut c = net.accept(PEER_PORT, T)?;
    let got = c.recv_dropping_first(head_complete, T)?;
    done_rx.recv_timeout(T).context("client write")?;
    c.reset()?;
    let read = join(h)?;
    net.settle(Duration::from_millis(300))?;
    let counts = c.counts();
    let seen = c.retransmits_seen();
    eprintln!("accepted, dropped once, reset: {seen} retransmit(s), client read {read:?}; conn {counts:?}");
    ensure!(got == REQUEST, "request corrupted: {got:?}");
    ensure!(seen >= 1, "no retransmission seen");
    ensure!(
        read == Err(ErrorKind::ConnectionReset),
        "client read returned {read:?}"
    );
    ensure!(
        (counts.rst_in, counts.rst_out, counts.syn_in, counts.syn_out) == (1, 0, 1, 1),
        "{counts:?}"
    );
    // out: SYN, ACK, the request (1 + retransmissions); in: SYN-ACK, one ACK
    // (for the retransmission only), RST.
    ensure!(
        (counts.packets_in, counts.packets_out) == (3, 3 + seen),
        "{counts:?}"
    );
    ensure!(
        counts == net.peer_totals(PEER_PORT),
        "conn and peer totals differ"
    );
    Ok(())
}

/// A SYN to a port the peer does not listen on is counted and never answered.
#[test]
fn syn_to_a_port_not_listened_on_is_only_counted() -> Result<()> {
    let net = TunNet::create()?;
    let addr = SocketAddr::from((net.peer_addr(), PEER_PORT));
    let r = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    ensure!(r.is_err(), "connected to a port nobody listens on");
    net.settle(Duration::from_millis(100))?;
    let t = net.peer_totals(PEER_PORT);
    eprintln!("unanswered SYN: {t:?}");
    ensure!(
        (t.packets_in, t.packets_out, t.syn_out) == (0, 1, 1),
        "{t:?}"
    );
    Ok(())
}
