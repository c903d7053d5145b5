//! TCP trouble on the gateway's connections: retransmissions and resets
//! (tcp:tcp_retransmit_skb, tcp:tcp_send_reset, tcp:tcp_receive_reset; Linux
//! 4.15 and later). They fire in any context, so sockets are matched by
//! address against the tracked ones, not by process.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use gatescope_common::{
    tp, KIND_TCP, TCP_EVENT_RESET_RECEIVED, TCP_EVENT_RESET_SENT, TCP_EVENT_RETRANSMIT,
};

use crate::{
    emit::{field, new_event, submit},
    maps::SOCKS,
};

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    on_tcp_event(
        field::<u64>(&ctx, tp::tcp_skb::SKADDR),
        TCP_EVENT_RETRANSMIT,
    );
    0
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    on_tcp_event(
        field::<u64>(&ctx, tp::tcp_skb::SKADDR),
        TCP_EVENT_RESET_SENT,
    );
    0
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    on_tcp_event(
        field::<u64>(&ctx, tp::tcp_receive_reset::SKADDR),
        TCP_EVENT_RESET_RECEIVED,
    );
    0
}

#[inline(always)]
fn on_tcp_event(sk: u64, what: i64) {
    // A reset answering a segment for no socket has no address: not ours.
    if sk == 0 {
        return;
    }
    // SAFETY: the value is copied out immediately.
    let Some(info) = (unsafe { SOCKS.get(sk) }).copied() else {
        return;
    };
    let mut event = new_event(KIND_TCP);
    event.role = info.role;
    event.tgid = info.tgid;
    event.sk = sk;
    event.value = what;
    submit(&event);
}
