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
/// those on their BTF tracepoint, with `btf`; the others are on trace
/// events) and fills its array.
pub(super) fn load(ebpf: &mut Ebpf, btf: Option<&Btf>, on_btf: &[&str]) -> anyhow::Result<()> {
    for (btf_form, event_form) in PIECE_PROGRAMS_BTF.into_iter().zip(PIECE_PROGRAMS) {
        let tracepoint = btf_form.2;
        let btf = btf.filter(|_| on_btf.contains(&tracepoint));
        let (program, array, _) = if btf.is_some() { btf_form } else { event_form };
        let prog = ebpf
            .program_mut(program)
            .with_context(|| format!("{program} missing from the object"))?;
        let fd = if let Some(btf) = btf {
            let prog: &mut BtfTracePoint = prog.try_into()?;
            prog.load(tracepoint, btf)
                .with_context(|| format!("loading {program}"))?;
            prog.fd()?.try_clone()?
        } else {
            let prog: &mut TracePoint = prog.try_into()?;
            prog.load().with_context(|| format!("loading {program}"))?;
            prog.fd()?.try_clone()?
        };
        let mut map = ProgramArray::try_from(
            ebpf.map_mut(array)
                .with_context(|| format!("map {array} missing from the object"))?,
        )?;
        map.set(0, &fd, 0)
            .with_context(|| format!("putting {program} in {array}"))?;
    }
    Ok(())
}
