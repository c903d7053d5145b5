//! The programs that take the rest of a transfer on an HTTP/2 socket past
//! the head its data record holds (ebpf/src/pieces.rs). They are only
//! loaded, and put in the program array their length program tail-calls;
//! without them a data record goes out with its head and tail alone.

use anyhow::Context as _;
use aya::{
    maps::ProgramArray,
    programs::{BtfTracePoint, TracePoint},
    Btf, Ebpf,
};
use gatescope_common::{PIECE_PROGRAMS, PIECE_PROGRAMS_BTF};

/// Loads the piece program of each length program attached (`on_btf`:
/// those on their BTF tracepoint; the others are on trace events) and
/// fills its array.
pub(super) fn load(ebpf: &mut Ebpf, btf: Option<&Btf>, on_btf: &[&str]) -> anyhow::Result<()> {
    for (i, &(program, array, tracepoint)) in PIECE_PROGRAMS_BTF.iter().enumerate() {
        let fd = if let (true, Some(btf)) = (on_btf.contains(&tracepoint), btf) {
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(program)
                .context("program missing from the object")?
                .try_into()?;
            prog.load(tracepoint, btf)
                .with_context(|| format!("loading {program}"))?;
            prog.fd()?.try_clone()?
        } else {
            let (program, _, _) = PIECE_PROGRAMS[i];
            let prog: &mut TracePoint = ebpf
                .program_mut(program)
                .context("program missing from the object")?
                .try_into()?;
            prog.load().with_context(|| format!("loading {program}"))?;
            prog.fd()?.try_clone()?
        };
        let array = if on_btf.contains(&tracepoint) {
            array
        } else {
            PIECE_PROGRAMS[i].1
        };
        let mut map = ProgramArray::try_from(
            ebpf.map_mut(array)
                .with_context(|| format!("map {array} missing from the object"))?,
        )?;
        map.set(0, &fd, 0)
            .with_context(|| format!("putting the piece program in {array}"))?;
    }
    Ok(())
}
