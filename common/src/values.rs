//! Newtypes for values the kernel writes (kinds, roles, directions, TCP states and events, loss reasons), each from one table.

/// Declares a `#[repr(transparent)]` newtype over a kernel integer with one
/// associated constant per known value, and, from the same table, `ALL`
/// (every known value, in table order), `NAMES` (their labels), `index()`
/// and `name()`. A value the table does not list is kept as it is, never
/// turned into a wrong one: the agent refuses it where it matters.
macro_rules! kernel_values {
    (
        $(#[$doc:meta])*
        pub struct $ty:ident($inner:ty) {
            $( $(#[$cdoc:meta])* $name:ident = $value:literal, $label:literal; )*
        }
    ) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(pub $inner);

        impl $ty {
            $( $(#[$cdoc])* pub const $name: $ty = $ty($value); )*

            /// Every known value, in table order.
            pub const ALL: [$ty; [$(stringify!($name)),*].len()] = [$($ty::$name),*];
            /// The label of each of [`Self::ALL`], in the same order.
            pub const NAMES: [&'static str; [$(stringify!($name)),*].len()] = [$($label),*];

            /// Position in [`Self::ALL`] (and [`Self::NAMES`]); `None` for a
            /// value the table does not know.
            #[inline]
            pub const fn index(self) -> Option<usize> {
                let mut i = 0;
                while i < Self::ALL.len() {
                    if Self::ALL[i].0 == self.0 {
                        return Some(i);
                    }
                    i += 1;
                }
                None
            }

            /// The label of a known value.
            #[inline]
            pub const fn name(self) -> Option<&'static str> {
                match self.index() {
                    Some(i) => Some(Self::NAMES[i]),
                    None => None,
                }
            }
        }

        impl core::fmt::Display for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "{}", self.0),
                }
            }
        }
    };
}

kernel_values! {
    /// What a ring-buffer record is ([`crate::records::Header::kind`]). The
    /// labels are the `kind` label of `gatescope_events_received_total`, in
    /// the order the agent exports them.
    pub struct Kind(u32) {
        /// [`crate::records::ConnOpen`].
        CONN_OPEN = 1, "conn_open";
        /// [`crate::records::ConnFound`].
        CONN_FOUND = 7, "conn_found";
        /// [`crate::records::State`].
        STATE = 2, "state";
        /// [`crate::records::Data`].
        DATA = 3, "data";
        // 4 was `accept` (sys_exit_accept4 records): accepted connections
        // are now derived by the agent (conntrack), with no syscall hook.
        /// [`crate::records::Tcp`].
        TCP = 8, "tcp";
        /// [`crate::records::Fork`].
        FORK = 5, "fork";
        /// [`crate::records::Exit`].
        EXIT = 6, "exit";
        /// [`crate::records::Exec`].
        EXEC = 9, "exec";
        /// [`crate::records::Listen`].
        LISTEN = 10, "listen";
        /// A [`crate::records::Data`] record of plaintext that OpenSSL moved
        /// for a TLS socket (`SSL_read`/`SSL_write` and their `_ex`): the
        /// socket's own records carry its ciphertext.
        TLS_DATA = 11, "tls_data";
        /// [`crate::records::DataPiece`].
        DATA_PIECE = 12, "data_piece";
    }
}

kernel_values! {
    /// Whose connection a socket is.
    pub struct Role(u32) {
        /// A client's connection to the gateway (passive open).
        DOWNSTREAM = 1, "downstream";
        /// The gateway's connection to an upstream (active open).
        UPSTREAM = 2, "upstream";
    }
}

kernel_values! {
    /// Which way bytes moved, from the gateway's point of view.
    pub struct Direction(u32) {
        /// Received by the gateway.
        INGRESS = 1, "ingress";
        /// Sent by the gateway.
        EGRESS = 2, "egress";
    }
}

kernel_values! {
    /// TCP states (include/net/tcp_states.h).
    pub struct TcpState(u32) {
        ESTABLISHED = 1, "ESTABLISHED";
        SYN_SENT = 2, "SYN_SENT";
        SYN_RECV = 3, "SYN_RECV";
        FIN_WAIT1 = 4, "FIN_WAIT1";
        FIN_WAIT2 = 5, "FIN_WAIT2";
        TIME_WAIT = 6, "TIME_WAIT";
        CLOSE = 7, "CLOSE";
        CLOSE_WAIT = 8, "CLOSE_WAIT";
        LAST_ACK = 9, "LAST_ACK";
        LISTEN = 10, "LISTEN";
        CLOSING = 11, "CLOSING";
    }
}

kernel_values! {
    /// Trouble on a TCP connection, by the tracepoint that reported it.
    pub struct TcpEvent(u32) {
        /// `tcp:tcp_retransmit_skb`: the gateway retransmitted a segment.
        RETRANSMIT = 1, "retransmit";
        /// `tcp:tcp_send_reset`: the gateway's socket sent a reset.
        RESET_SENT = 2, "reset_sent";
        /// `tcp:tcp_receive_reset`: the peer reset the connection.
        RESET_RECEIVED = 3, "reset_received";
    }
}

kernel_values! {
    /// Why something was lost in the kernel: the index into
    /// [`crate::maps::MAP_LOST`]. The labels are the `reason` label of
    /// `gatescope_events_lost_total`.
    pub struct LostReason(u32) {
        /// A record did not fit in the ring buffer.
        RINGBUF_FULL = 0, "ringbuf_full";
        /// A new process or thread of a target not followed: TARGETS was full.
        TARGETS_FULL = 1, "targets_map_full";
        /// A connection open refused because [`crate::maps::MAP_SOCKS`] was
        /// full (once per open).
        SOCKS_FULL = 2, "sockets_map_full";
        /// Payload of a transfer not captured because ARGS was full (bytes
        /// still counted).
        ARGS_FULL = 3, "args_map_full";
        /// Packets not counted in the wire view because WIRE was full.
        WIRE_FULL = 4, "wire_map_full";
        /// An upstream peer left out of the wire view because PEERS was full.
        PEERS_FULL = 5, "peers_map_full";
        /// Plaintext of an OpenSSL call not attributed: the `SSL*` was never
        /// seen with a socket (no syscall inside any of its calls yet).
        TLS_UNBOUND = 6, "tls_unbound";
        /// Plaintext of an OpenSSL call not attributed: TLS records went to
        /// two sockets inside one call.
        TLS_MISMATCH = 7, "tls_mismatch";
        /// An OpenSSL call not followed: TLS_CALLS was full.
        TLS_CALLS_FULL = 8, "tls_calls_map_full";
        /// Plaintext of an OpenSSL call whose buffer the program could not
        /// read (a page not present): its bytes are counted, its content is
        /// a gap to the parser.
        TLS_UNREADABLE = 9, "tls_unreadable";
    }
}

/// Number of [`LostReason`]s: the size of [`crate::maps::MAP_LOST`].
pub const LOST_REASONS: u32 = LostReason::ALL.len() as u32;
/// Names of the [`LostReason`]s by index, as exported in the `reason` label.
pub const LOST_REASON_NAMES: [&str; LOST_REASONS as usize] = LostReason::NAMES;

// The loss counters are an array indexed by reason: the table must number
// them 0, 1, 2, ... in order.
const _: () = {
    let mut i = 0;
    while i < LostReason::ALL.len() {
        assert!(LostReason::ALL[i].0 as usize == i);
        i += 1;
    }
};

/// Address families as the kernel numbers them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;

/// `recvmsg` flag: the data stays queued, so peeked bytes are not received.
pub const MSG_PEEK: i32 = 2;
/// Failed reads that are not I/O a handler acted on: nothing to read yet
/// (`EAGAIN`), or interrupted (`EINTR`, `ERESTARTSYS`).
pub const READ_NOTHING_ERRNOS: [i32; 3] = [11, 4, 512];

/// Whether bytes start with a TLS record header: content type 20-23 (change
/// cipher spec, alert, handshake, application data), then version 3.x. The
/// kernel ties an OpenSSL call's `SSL*` to the socket whose transfer inside
/// it starts so (OpenSSL reads a record's 5-byte header in a read of its
/// own, and writes whole records); the agent counts such a connection's
/// bytes without parsing them.
#[inline(always)]
#[must_use]
pub fn is_tls_record_start(b: &[u8]) -> bool {
    matches!(b, [20..=23, 3, 0..=4, ..])
}
