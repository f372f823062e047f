//! One module per subcommand group; each owns its arguments and its `run_*`.

pub(crate) mod compat;
pub(crate) mod inspect;
pub(crate) mod matrix;
pub(crate) mod reference;
pub(crate) mod sev;
pub(crate) mod tdx;
pub(crate) mod verify;

pub(crate) use compat::*;
pub(crate) use inspect::*;
pub(crate) use matrix::*;
pub(crate) use sev::*;
