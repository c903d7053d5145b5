//! Field offsets in the tracepoint records the programs read, each written once, and the table the agent checks them with.
//!
//! The offsets are what /sys/kernel/tracing/events/<category>/<name>/format
//! gives on Linux 6.x. The kernel programs use the constants; the agent
//! compares [`expected`] (built from the same table) with the running
//! kernel's format files at start and refuses to run on a mismatch, so a
//! changed layout is an error message, not wrong numbers.

/// One record layout: the events of `category` that share it, and the
/// (field, offset, size) of every field the programs read.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub category: &'static str,
    pub events: &'static [&'static str],
    pub fields: &'static [(&'static str, usize, usize)],
}

/// For each layout, a module of offset constants (`pub const SPORT: usize =
/// 24`) and its entry in [`LAYOUTS`], from one line per field; items in an
/// optional second block are added to the module as they are.
macro_rules! tracepoints {
    ($(
        $(#[$doc:meta])*
        pub mod $module:ident: $category:literal [$($event:literal),+] {
            $( $(#[$fdoc:meta])* $konst:ident = $field:literal at $offset:literal size $size:literal; )*
        } $({ $($extra:item)* })?
    )*) => {
        $(
            $(#[$doc])*
            pub mod $module {
                $( $(#[$fdoc])* pub const $konst: usize = $offset; )*
                $($($extra)*)?

                /// This layout's entry in [`super::LAYOUTS`].
                pub const LAYOUT: super::Layout = super::Layout {
                    category: $category,
                    events: &[$($event),+],
                    fields: &[$(($field, $konst, $size)),*],
                };
            }
        )*

        /// Every layout the programs depend on, in the order the agent
        /// checks them.
        pub const LAYOUTS: &[Layout] = &[$($module::LAYOUT),*];
    };
}

tracepoints! {
    /// `sock:inet_sock_set_state` (include/trace/events/sock.h).
    pub mod inet_sock_set_state: "sock" ["inet_sock_set_state"] {
        SKADDR = "skaddr" at 8 size 8;
        OLDSTATE = "oldstate" at 16 size 4;
        NEWSTATE = "newstate" at 20 size 4;
        SPORT = "sport" at 24 size 2;
        DPORT = "dport" at 26 size 2;
        FAMILY = "family" at 28 size 2;
        PROTOCOL = "protocol" at 30 size 2;
        SADDR = "saddr" at 32 size 4;
        DADDR = "daddr" at 36 size 4;
        SADDR_V6 = "saddr_v6" at 40 size 16;
        DADDR_V6 = "daddr_v6" at 56 size 16;
    }
    /// `sock:sock_send_length` and `sock:sock_recv_length` share a layout.
    pub mod sock_length: "sock" ["sock_send_length", "sock_recv_length"] {
        SK = "sk" at 8 size 8;
        FAMILY = "family" at 16 size 2;
        PROTOCOL = "protocol" at 18 size 2;
        RET = "ret" at 20 size 4;
        FLAGS = "flags" at 24 size 4;
    }
    /// `sched:sched_process_fork`.
    pub mod sched_process_fork: "sched" ["sched_process_fork"] {
        CHILD_PID = "child_pid" at 20 size 4;
    }
    /// `sched:sched_process_exit`.
    pub mod sched_process_exit: "sched" ["sched_process_exit"] {
        GROUP_DEAD = "group_dead" at 32 size 1;
    }
    /// `sched:sched_process_exec` (include/trace/events/sched.h).
    pub mod sched_process_exec: "sched" ["sched_process_exec"] {
        /// The task's pid after exec: its tgid, since exec made it the
        /// thread-group leader.
        PID = "pid" at 12 size 4;
    }
    /// `tcp:tcp_retransmit_skb` and `tcp:tcp_send_reset`.
    pub mod tcp_skb: "tcp" ["tcp_retransmit_skb", "tcp_send_reset"] {
        SKADDR = "skaddr" at 16 size 8;
    }
    /// `tcp:tcp_send_reset`: the two ends as `struct sockaddr_in{,6}`
    /// (family, then the port in network order, then the address: at 4
    /// for IPv4, at 8 for IPv6).
    pub mod tcp_send_reset: "tcp" ["tcp_send_reset"] {
        SADDR = "saddr" at 32 size 28;
        DADDR = "daddr" at 60 size 28;
    }
    /// `tcp:tcp_receive_reset`.
    pub mod tcp_receive_reset: "tcp" ["tcp_receive_reset"] {
        SKADDR = "skaddr" at 8 size 8;
    }
    /// `raw_syscalls:sys_enter`: the syscall number, then its six arguments.
    pub mod raw_syscalls: "raw_syscalls" ["sys_enter"] {
        ID = "id" at 8 size 8;
        ARGS = "args" at 16 size 48;
    } {
        /// The second argument: the buffer, iovec array or msghdr of the
        /// send/recv family.
        pub const PTR: usize = ARGS + 8;
        /// The third argument: the buffer length or iovec count.
        pub const COUNT: usize = ARGS + 16;
    }
}

/// Every (category, event, field, offset, size) the programs depend on, in
/// [`LAYOUTS`] order: each event's fields in turn.
pub fn expected() -> impl Iterator<Item = (&'static str, &'static str, &'static str, usize, usize)>
{
    LAYOUTS.iter().flat_map(|layout| {
        layout.events.iter().flat_map(move |&event| {
            layout
                .fields
                .iter()
                .map(move |&(field, offset, size)| (layout.category, event, field, offset, size))
        })
    })
}
