//! One TCP connection over a [`TunNet`](super::TunNet), driven by the fake peer.

use anyhow::{anyhow, ensure, Context, Result};
use std::time::{Duration, Instant};

use super::{packet::*, *};

/// A TCP connection over a [`TunNet`], opened by us ([`TunNet::connect`]) or by
/// the kernel ([`TunNet::accept`]), driven from the calling thread.
pub struct TunConn<'a> {
    pub(super) net: &'a TunNet,
    pub(super) lport: u16,
    pub(super) rport: u16,
    pub(super) snd_una: u32,
    pub(super) snd_nxt: u32,
    pub(super) snd_wnd: u32,
    pub(super) mss: u16,
    pub(super) irs: u32,
    pub(super) rcv_nxt: u32,
    /// End of the highest sequence range received (kept or discarded): a segment
    /// starting below it is a retransmission.
    pub(super) highest_rcv: u32,
    /// In-order data not yet returned by `recv`.
    pub(super) rx: Vec<u8>,
    pub(super) fin_sent: bool,
    pub(super) fin_received: bool,
    pub(super) reset_sent: bool,
    pub(super) reset_received: bool,
    pub(super) drop_next_data: bool,
    pub(super) retransmits: u64,
    pub(super) handshake: Duration,
    pub(super) handshake_window: (Duration, Duration),
}

impl TunConn<'_> {
    /// [`TunNet::connect`]: from just before our SYN write to just before our
    /// final ACK write. [`TunNet::accept`]: from just before our SYN-ACK write
    /// to reading the kernel's final ACK.
    pub fn handshake(&self) -> Duration {
        self.handshake
    }

    /// [`TunNet::connect`] only: the shortest and longest time the kernel can
    /// have measured from our SYN to our final ACK. A TUN write hands the
    /// packet to `netif_receive_skb` inside the `write(2)` itself (packet taps
    /// and TCP's receive path run before it returns), so the kernel's reading
    /// of `CLOCK_MONOTONIC` for each packet lies between our readings of the
    /// same clock (`Instant`) just before and just after that write: from
    /// (before the ACK write - after the SYN write) to (after the ACK write -
    /// before the SYN write). Its width is what our own writes took, usually
    /// tens of microseconds; more if the scheduler preempted us in between.
    pub fn handshake_window(&self) -> (Duration, Duration) {
        self.handshake_window
    }

    /// Our (the fake peer's) port.
    pub fn local_port(&self) -> u16 {
        self.lport
    }

    /// The kernel side's port.
    pub fn remote_port(&self) -> u16 {
        self.rport
    }

    /// This connection's packets only (as read/written so far).
    pub fn counts(&self) -> WireCount {
        self.net.inner.borrow().conns[&(self.lport, self.rport)].counts
    }

    /// Data/FIN segments (and SYN-ACKs) received whose sequence range had already
    /// been received or discarded: what the kernel retransmitted to us.
    pub fn retransmits_seen(&self) -> u64 {
        self.retransmits
    }

    /// Send `data` in segments of at most the MSS within the kernel's window (PSH
    /// on the last), and wait until all of it is acknowledged.
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        ensure!(!self.fin_sent, "send after close");
        ensure!(!self.reset_sent, "send after reset");
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut off = 0;
        while off < data.len() {
            self.check_reset("sending")?;
            let in_flight = self.snd_nxt.wrapping_sub(self.snd_una);
            if in_flight >= self.snd_wnd {
                self.step(deadline, "window space from the kernel")?;
                continue;
            }
            let n = (data.len() - off)
                .min(usize::from(self.mss))
                .min((self.snd_wnd - in_flight) as usize);
            let last = off + n == data.len();
            let flags = if last { ACK | PSH } else { ACK };
            self.net.write_seg(
                self.lport,
                self.rport,
                self.snd_nxt,
                self.rcv_nxt,
                flags,
                None,
                &data[off..off + n],
            )?;
            self.snd_nxt = self.snd_nxt.wrapping_add(n as u32);
            off += n;
        }
        while self.snd_una != self.snd_nxt {
            self.check_reset("waiting for the ACK of our data")?;
            self.step(deadline, "the ACK of our data")?;
        }
        Ok(())
    }

    /// Receive in-order data, ACKing each data segment at once, until `until`
    /// holds for the bytes received since the previous `recv`; return (and
    /// consume) those bytes.
    pub fn recv(&mut self, until: impl Fn(&[u8]) -> bool, timeout: Duration) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if until(&self.rx) {
                return Ok(std::mem::take(&mut self.rx));
            }
            self.check_reset("receiving")?;
            ensure!(
                !self.fin_received,
                "the kernel closed (FIN) after {} bytes, before the receive condition held",
                self.rx.len()
            );
            let have = self.rx.len();
            self.step(deadline, "data")
                .with_context(|| format!("{have} bytes received so far"))?;
        }
    }

    /// Like [`recv`](Self::recv), but the next data segment is discarded without an
    /// ACK, so the kernel has to retransmit it.
    pub fn recv_dropping_first(
        &mut self,
        until: impl Fn(&[u8]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        self.drop_next_data = true;
        self.recv(until, timeout)
    }

    /// Process (and answer) incoming segments for `d`, e.g. to let the kernel's
    /// pending packets arrive while the test does something else.
    pub fn pump_for(&mut self, d: Duration) -> Result<()> {
        let deadline = Instant::now() + d;
        while let Some(seg) = self.net.next_for(self.key(), deadline)? {
            self.handle(seg)?;
        }
        Ok(())
    }

    /// Orderly close: send our FIN (if not sent), then wait until it is ACKed and
    /// the kernel's FIN has arrived (and been ACKed). Works whether the server
    /// closed first or not.
    pub fn close(&mut self) -> Result<()> {
        ensure!(!self.reset_sent, "close after reset");
        self.check_reset("closing")?;
        if !self.fin_sent {
            self.net.write_seg(
                self.lport,
                self.rport,
                self.snd_nxt,
                self.rcv_nxt,
                FIN | ACK,
                None,
                &[],
            )?;
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            self.fin_sent = true;
        }
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.snd_una != self.snd_nxt || !self.fin_received {
            self.check_reset("closing")?;
            let what = if self.snd_una == self.snd_nxt {
                "the kernel's FIN"
            } else {
                "the ACK of our FIN"
            };
            self.step(deadline, what)?;
        }
        Ok(())
    }

    /// Abort: send RST|ACK at our next sequence number (the exact value the kernel
    /// accepts; an in-window mismatch would only earn a challenge ACK).
    pub fn reset(&mut self) -> Result<()> {
        ensure!(!self.reset_sent, "reset sent twice");
        self.net.write_seg(
            self.lport,
            self.rport,
            self.snd_nxt,
            self.rcv_nxt,
            RST | ACK,
            None,
            &[],
        )?;
        self.reset_sent = true;
        Ok(())
    }

    /// Wait for an RST from the kernel (returns at once if one already came).
    pub fn wait_reset(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.reset_received {
            self.step(deadline, "an RST from the kernel")?;
        }
        Ok(())
    }

    /// Wait (answering segments) until the kernel's FIN has been received in
    /// order; returns at once if it already was. Data arriving before it is kept
    /// for [`recv`](Self::recv).
    pub fn wait_fin(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.fin_received {
            self.check_reset("waiting for the kernel's FIN")?;
            self.step(deadline, "the kernel's FIN")?;
        }
        Ok(())
    }

    /// True once the kernel's FIN has been received in order.
    pub fn fin_received(&self) -> bool {
        self.fin_received
    }

    fn key(&self) -> (u16, u16) {
        (self.lport, self.rport)
    }

    fn check_reset(&self, doing: &str) -> Result<()> {
        ensure!(
            !self.reset_received,
            "connection {}->{}:{} reset by the kernel while {doing}",
            self.lport,
            self.net.kernel,
            self.rport
        );
        Ok(())
    }

    /// Process the next segment for this connection or fail naming `what`.
    fn step(&mut self, deadline: Instant, what: &str) -> Result<()> {
        let seg = self.net.next_for(self.key(), deadline)?.ok_or_else(|| {
            anyhow!(
                "timed out waiting for {what} on {}:{} -> {}:{}",
                self.net.peer,
                self.lport,
                self.net.kernel,
                self.rport
            )
        })?;
        self.handle(seg)
    }

    pub(super) fn send_ack(&self) -> Result<()> {
        self.net.write_seg(
            self.lport,
            self.rport,
            self.snd_nxt,
            self.rcv_nxt,
            ACK,
            None,
            &[],
        )
    }

    pub(super) fn handle(&mut self, seg: Seg) -> Result<()> {
        if seg.flags & RST != 0 {
            self.reset_received = true;
            return Ok(());
        }
        if seg.flags & SYN != 0 {
            // A retransmitted SYN-ACK (our ACK came late, or was sent after it):
            // our ACK already covers it, so it is not answered.
            if seg.seq == self.irs {
                self.retransmits += 1;
            }
            return Ok(());
        }
        if seg.flags & ACK != 0 {
            if seq_lt(self.snd_una, seg.ack) && seq_le(seg.ack, self.snd_nxt) {
                self.snd_una = seg.ack;
            }
            self.snd_wnd = u32::from(seg.window);
        }
        let fin = seg.flags & FIN != 0;
        let len = seg.payload.len() as u32 + u32::from(fin);
        if len == 0 {
            return Ok(()); // pure ACK / window update: nothing to answer
        }
        let end = seg.seq.wrapping_add(len);
        if seq_lt(seg.seq, self.highest_rcv) {
            self.retransmits += 1;
        }
        if seq_lt(self.highest_rcv, end) {
            self.highest_rcv = end;
        }
        if self.drop_next_data && !seg.payload.is_empty() {
            self.drop_next_data = false;
            return Ok(());
        }
        if seq_le(seg.seq, self.rcv_nxt) && seq_lt(self.rcv_nxt, end) {
            let skip = self.rcv_nxt.wrapping_sub(seg.seq) as usize;
            if skip < seg.payload.len() {
                self.rx.extend_from_slice(&seg.payload[skip..]);
            }
            let data_end = seg.seq.wrapping_add(seg.payload.len() as u32);
            self.rcv_nxt = data_end;
            if fin {
                self.rcv_nxt = data_end.wrapping_add(1);
                self.fin_received = true;
            }
        }
        // In order, duplicate or out of order: one ACK (a dup ACK for the latter two).
        self.send_ack()
    }
}

impl Drop for TunConn<'_> {
    fn drop(&mut self) {
        // Stop queueing; later packets of this connection are still counted.
        if let Some(slot) = self.net.inner.borrow_mut().conns.get_mut(&self.key()) {
            slot.live = false;
            slot.queue.clear();
        }
    }
}
