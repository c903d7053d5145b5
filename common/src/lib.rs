//! Types shared by the kernel programs (`gatescope-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]` plain integers with explicit padding, so the
//! byte layout the kernel writes is exactly the layout the agent reads. No
//! enums, `Option`s or `bool`s cross the boundary: kinds, roles, directions,
//! TCP states and loss reasons are `#[repr(transparent)]` newtypes over
//! integers with associated constants ([`values`]), which the agent turns
//! into its own enums, refusing unknown values.
//!
//! - [`values`]: the newtypes and the kernel's own numbers.
//! - [`records`]: what the ring buffer carries, one payload per record kind.
//! - [`maps`]: map and global names, capacities, keys and values.
//! - [`offsets`]: struct offsets the agent patches into the programs.
//! - [`tp`]: the tracepoint record layouts the programs read.
#![no_std]

pub mod maps;
pub mod offsets;
pub mod records;
pub mod tracepoints;
pub mod values;

pub use maps::*;
pub use offsets::*;
pub use records::*;
pub use tracepoints as tp;
pub use values::*;
