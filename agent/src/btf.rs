//! Field offsets of `struct sock_common` from the running kernel's BTF
//! (/sys/kernel/btf/vmlinux), for the kernel program that claims connections
//! open before gatescope started (ebpf/src/found.rs). rustc emits no CO-RE
//! relocations, so offsets are resolved here, at start, and handed over.
//!
//! Only what that needs is read: the type section is walked once to find
//! each type's start, then struct and union members are followed by name,
//! through anonymous unions and structs (the fields sit in unions like
//! `skc_addrpair`). aya-obj keeps BTF members private; a full BTF crate is
//! more than this needs.

use std::{fs, path::Path};

use gatescope_common::SockOffsets;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("not BTF data (bad header)")]
    Header,
    #[error("truncated BTF data")]
    Truncated,
    #[error("BTF has no struct {0}")]
    NoStruct(&'static str),
    #[error("struct {0} has no member {1}")]
    NoMember(&'static str, &'static str),
}

struct Btf {
    data: Vec<u8>,
    types_start: usize,
    strings_start: usize,
    strings_end: usize,
    /// Byte offset (from `types_start`) of each type, by type id (id 0 is void).
    type_at: Vec<u32>,
}

impl Btf {
    fn parse(data: Vec<u8>) -> Result<Btf, BtfError> {
        let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let u32_at = |o: usize| {
            data.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if u16_at(0) != Some(MAGIC) {
            return Err(BtfError::Header);
        }
        let hdr_len = u32_at(4).ok_or(BtfError::Header)? as usize;
        let type_off = u32_at(8).ok_or(BtfError::Header)? as usize;
        let type_len = u32_at(12).ok_or(BtfError::Header)? as usize;
        let str_off = u32_at(16).ok_or(BtfError::Header)? as usize;
        let str_len = u32_at(20).ok_or(BtfError::Header)? as usize;
        let types_start = hdr_len + type_off;
        let strings_start = hdr_len + str_off;
        if types_start + type_len > data.len() || strings_start + str_len > data.len() {
            return Err(BtfError::Truncated);
        }
        let mut type_at = vec![0u32];
        let mut pos = 0usize;
        while pos + 12 <= type_len {
            type_at.push(pos as u32);
            let info = u32_at(types_start + pos + 4).ok_or(BtfError::Truncated)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            pos += 12
                + match kind {
                    KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                    KIND_ARRAY => 12,
                    KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                    KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                    _ => 0,
                };
        }
        Ok(Btf {
            data,
            types_start,
            strings_start,
            strings_end: strings_start + str_len,
            type_at,
        })
    }

    fn u32(&self, offset: usize) -> u32 {
        self.data
            .get(offset..offset + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn name(&self, name_off: u32) -> &[u8] {
        let start = self.strings_start + name_off as usize;
        let rest = self.data.get(start..self.strings_end).unwrap_or(&[]);
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// (name_off, info, size_or_type, offset of the kind-specific data).
    fn header(&self, id: u32) -> Option<(u32, u32, u32, usize)> {
        let at = self.types_start + *self.type_at.get(id as usize)? as usize;
        Some((self.u32(at), self.u32(at + 4), self.u32(at + 8), at + 12))
    }

    fn struct_by_name(&self, name: &str) -> Option<u32> {
        (1..self.type_at.len() as u32).find(|&id| {
            self.header(id).is_some_and(|(name_off, info, _, _)| {
                (info >> 24) & 0x1f == KIND_STRUCT && self.name(name_off) == name.as_bytes()
            })
        })
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.header(id) {
                Some((_, info, target, _))
                    if matches!(
                        (info >> 24) & 0x1f,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = target;
                }
                _ => break,
            }
        }
        id
    }

    /// Byte offset of member `name` in struct/union `id`, looking inside
    /// anonymous members.
    fn member_offset(&self, id: u32, name: &str, depth: u32) -> Option<u32> {
        let (_, info, _, members) = self.header(self.resolve(id))?;
        let kind = (info >> 24) & 0x1f;
        if depth > 8 || !(kind == KIND_STRUCT || kind == KIND_UNION) {
            return None;
        }
        let bitfields = info >> 31 == 1;
        for i in 0..(info & 0xffff) as usize {
            let at = members + i * 12;
            let (name_off, ty, raw) = (self.u32(at), self.u32(at + 4), self.u32(at + 8));
            let bits = if bitfields { raw & 0xff_ffff } else { raw };
            if self.name(name_off) == name.as_bytes() {
                return Some(bits / 8);
            }
            if name_off == 0 {
                if let Some(inner) = self.member_offset(ty, name, depth + 1) {
                    return Some(bits / 8 + inner);
                }
            }
        }
        None
    }

    fn offset(&self, strukt: &'static str, member: &'static str) -> Result<u32, BtfError> {
        let id = self
            .struct_by_name(strukt)
            .ok_or(BtfError::NoStruct(strukt))?;
        self.member_offset(id, member, 0)
            .ok_or(BtfError::NoMember(strukt, member))
    }
}

/// Offsets of the `struct sock` fields the programs read.
pub fn sock_offsets(path: &Path) -> Result<SockOffsets, BtfError> {
    let data = fs::read(path).map_err(|e| BtfError::Read(path.display().to_string(), e))?;
    let btf = Btf::parse(data)?;
    let base = btf.offset("sock", "__sk_common")?;
    let field = |name: &'static str| btf.offset("sock_common", name).map(|o| base + o);
    Ok(SockOffsets {
        enabled: 1,
        family: field("skc_family")?,
        num: field("skc_num")?,
        dport: field("skc_dport")?,
        rcv_saddr: field("skc_rcv_saddr")?,
        daddr: field("skc_daddr")?,
        v6_rcv_saddr: field("skc_v6_rcv_saddr")?,
        v6_daddr: field("skc_v6_daddr")?,
        state: field("skc_state")?,
        receive_queue_len: btf.offset("sock", "sk_receive_queue")?
            + btf.offset("sk_buff_head", "qlen")?,
        protocol: btf.offset("sock", "sk_protocol")?,
        copied_seq: btf.offset("tcp_sock", "copied_seq")?,
        // Without them (a kernel built without network namespaces) every
        // listener is keyed in namespace 0, as the programs' default.
        net: field("skc_net").unwrap_or(0),
        net_inum: btf
            .offset("net", "ns")
            .and_then(|ns| Ok(ns + btf.offset("ns_common", "inum")?))
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF (our machines have /sys/kernel/btf/vmlinux): the
    /// offsets of the fields that have not moved in years.
    #[test]
    fn resolves_sock_common_from_the_running_kernel() {
        let off = sock_offsets(Path::new(VMLINUX)).expect("BTF of the running kernel");
        // include/net/sock.h: skc_addrpair { skc_daddr; skc_rcv_saddr } at 0,
        // skc_hash at 8, skc_portpair { skc_dport; skc_num } at 12,
        // skc_family at 16, skc_state at 18.
        assert_eq!(
            (
                off.daddr,
                off.rcv_saddr,
                off.dport,
                off.num,
                off.family,
                off.state
            ),
            (0, 4, 12, 14, 16, 18)
        );
        assert!(
            off.v6_daddr > 16 && off.v6_rcv_saddr == off.v6_daddr + 16,
            "{off:?}"
        );
        // sk_receive_queue follows sock_common; qlen after its two pointers.
        assert!(off.receive_queue_len > off.v6_rcv_saddr, "{off:?}");
        // skc_net sits after the addresses (include/net/sock.h), and our
        // kernels have network namespaces.
        assert!(off.net > off.state && off.net_inum > 0, "{off:?}");
        assert!(off.knows_netns());
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(matches!(Btf::parse(vec![0; 64]), Err(BtfError::Header)));
        let mut truncated = vec![0u8; 24];
        truncated[..2].copy_from_slice(&MAGIC.to_le_bytes());
        truncated[4..8].copy_from_slice(&24u32.to_le_bytes());
        truncated[12..16].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(Btf::parse(truncated), Err(BtfError::Truncated)));
    }
}
