//! The wire view's taps: one AF_PACKET socket per observed interface, each
//! carrying the `wire` socket filter (ebpf/src/wire.rs), and the counters
//! that filter keeps in the WIRE map.
//!
//! A tap only receives copies of packets, and its filter keeps none of them,
//! so the gateway's traffic is never dropped or delayed by it. (A filter on
//! the gateway's own sockets would run in their receive path and decide
//! what the gateway gets; see the README.)

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::{self, Error},
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use aya::maps::{MapData, PerCpuHashMap};
use gatescope_common::{WireCounts, WireKey};
use tracing::{info, warn};

/// `ETH_P_ALL`: every protocol, both directions (include/uapi/linux/if_ether.h).
const ETH_P_ALL: u16 = 0x0003;
/// `PACKET_IGNORE_OUTGOING` (Linux 4.20, include/uapi/linux/if_packet.h).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

/// Which interfaces to tap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every interface that is up, followed as interfaces come and go.
    AllUp,
    /// Exactly these, by name.
    Named(Vec<String>),
}

/// An interface as /sys/class/net describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub up: bool,
    pub loopback: bool,
}

/// Lists the interfaces of the agent's network namespace.
pub fn interfaces(sys_class_net: &Path) -> io::Result<Vec<Interface>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(sys_class_net)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        let read = |file: &str| fs::read_to_string(dir.join(file)).ok();
        let (Some(ifindex), Some(flags)) = (read("ifindex"), read("flags")) else {
            continue; // vanished while we looked
        };
        let Ok(ifindex) = ifindex.trim().parse::<u32>() else {
            continue;
        };
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
        out.push(Interface {
            name,
            ifindex,
            up: flags & IFF_UP != 0,
            loopback: flags & IFF_LOOPBACK != 0,
        });
    }
    out.sort_by_key(|i| i.ifindex);
    Ok(out)
}

struct Tap {
    name: String,
    _socket: OwnedFd,
}

/// The open taps, kept in step with the interfaces by [`Taps::sync`].
pub struct Taps {
    program: OwnedFd,
    selection: Selection,
    #[expect(
        clippy::struct_field_names,
        reason = "the taps of the Taps, by ifindex"
    )]
    taps: BTreeMap<u32, Tap>,
    /// ifindex -> name of every interface ever tapped, so counters of an
    /// interface that went away keep their label.
    names: HashMap<u32, String>,
}

impl Taps {
    /// `program` is the loaded `wire` socket filter's fd.
    pub fn new(program: OwnedFd, selection: Selection) -> Self {
        Taps {
            program,
            selection,
            taps: BTreeMap::new(),
            names: HashMap::new(),
        }
    }

    /// Opens taps on new interfaces and closes those of interfaces that went
    /// away or down. Named interfaces that do not exist are an error at the
    /// first call (start-up), a warning later.
    pub fn sync(&mut self, sys_class_net: &Path) -> Result<(), TapError> {
        let all = interfaces(sys_class_net).map_err(TapError::List)?;
        let wanted: Vec<&Interface> = match &self.selection {
            Selection::AllUp => all.iter().filter(|i| i.up).collect(),
            Selection::Named(names) => {
                let mut found = Vec::new();
                for name in names {
                    match all.iter().find(|i| &i.name == name) {
                        Some(i) => found.push(i),
                        None if self.names.is_empty() => {
                            return Err(TapError::NoInterface(name.clone()))
                        }
                        None => {}
                    }
                }
                found
            }
        };
        self.taps.retain(|ifindex, tap| {
            let keep = wanted
                .iter()
                .any(|i| i.ifindex == *ifindex && i.name == tap.name);
            if !keep {
                info!(interface = %tap.name, "wire view: interface gone, tap closed");
            }
            keep
        });
        for iface in wanted {
            if self.taps.contains_key(&iface.ifindex) {
                continue;
            }
            match open_tap(&self.program, iface) {
                Ok(socket) => {
                    info!(interface = %iface.name, "wire view: tapping");
                    self.names.insert(iface.ifindex, iface.name.clone());
                    self.taps.insert(
                        iface.ifindex,
                        Tap {
                            name: iface.name.clone(),
                            _socket: socket,
                        },
                    );
                }
                Err(error) if matches!(self.selection, Selection::Named(_)) => {
                    return Err(TapError::Open {
                        interface: iface.name.clone(),
                        error,
                    })
                }
                Err(e) => warn!(interface = %iface.name, "wire view: cannot tap: {e}"),
            }
        }
        Ok(())
    }

    pub fn name(&self, ifindex: u32) -> Option<&str> {
        self.names.get(&ifindex).map(String::as_str)
    }

    pub fn tapped(&self) -> usize {
        self.taps.len()
    }

    /// Starts closing every tap at once, each on its own thread: closing a
    /// packet socket waits for an RCU grace period (net/packet/af_packet.c,
    /// packet_release), which under load is long enough (once 1.6 s in CI)
    /// that the agent overlaps it with detaching the tracepoints, which wait
    /// for grace periods too.
    pub fn close(self) -> ClosingTaps {
        ClosingTaps(
            self.taps
                .into_values()
                .map(|tap| std::thread::spawn(move || drop(tap)))
                .collect(),
        )
    }
}

/// Taps being closed (see [`Taps::close`]).
pub struct ClosingTaps(Vec<std::thread::JoinHandle<()>>);

impl ClosingTaps {
    /// Returns once every tap is closed.
    pub fn wait(self) {
        for handle in self.0 {
            let _ = handle.join();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot list network interfaces in /sys/class/net: {0}")]
    List(Error),
    #[error("--interface {0}: no such network interface")]
    NoInterface(String),
    // `error`, not `source`: thiserror would make a field so named the source, and the
    // chain printed at start-up would say it twice.
    #[error("cannot open a packet socket on {interface}: {error}")]
    Open { interface: String, error: Error },
}

/// An AF_PACKET socket on `iface` with the filter attached. The filter is
/// attached before the socket is bound, so it never sees another
/// interface's packets, and no packet is queued to the socket unfiltered.
fn open_tap(program: &OwnedFd, iface: &Interface) -> io::Result<OwnedFd> {
    // Protocol 0: not yet receiving; bind() below starts it on one interface.
    // SAFETY: plain syscall; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt(
        &socket,
        libc::SOL_SOCKET,
        libc::SO_ATTACH_BPF,
        program.as_raw_fd(),
    )?;
    if iface.loopback {
        // On loopback every packet passes the tap twice, leaving and
        // arriving; keep the arrival.
        setsockopt(&socket, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
    }
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_ALL.to_be();
    addr.sll_ifindex = iface.ifindex as i32;
    // SAFETY: addr is a valid sockaddr_ll of the given size.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(Error::last_os_error());
    }
    Ok(socket)
}

fn setsockopt(
    socket: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: value is a valid c_int for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::last_os_error())
    }
}

/// The filter's counters, summed over CPUs.
pub fn read_counters(
    map: &PerCpuHashMap<MapData, WireKey, WireCounts>,
) -> Vec<(WireKey, WireCounts)> {
    map.iter()
        .filter_map(Result::ok)
        .map(|(key, per_cpu)| {
            let total = per_cpu.iter().fold(WireCounts::default(), |mut t, c| {
                t.packets += c.packets;
                t.bytes += c.bytes;
                t.resets += c.resets;
                t.syns += c.syns;
                t
            });
            (key, total)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_this_machines_interfaces_with_loopback() {
        let all = interfaces(Path::new("/sys/class/net")).unwrap();
        let lo = all.iter().find(|i| i.name == "lo").expect("lo exists");
        assert!(lo.loopback && lo.up, "{lo:?}");
        assert!(all.iter().all(|i| i.ifindex > 0));
    }

    #[test]
    fn reads_flags_and_index_from_a_sysfs_like_tree() {
        let dir = std::env::temp_dir().join(format!("gs-wire-{}", std::process::id()));
        for (name, index, flags) in [("eth0", "2", "0x1003"), ("down0", "3", "0x1002")] {
            let d = dir.join(name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("ifindex"), format!("{index}\n")).unwrap();
            fs::write(d.join("flags"), format!("{flags}\n")).unwrap();
        }
        let all = interfaces(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            all,
            vec![
                Interface {
                    name: "eth0".into(),
                    ifindex: 2,
                    up: true,
                    loopback: false
                },
                Interface {
                    name: "down0".into(),
                    ifindex: 3,
                    up: false,
                    loopback: false
                },
            ]
        );
    }
}
