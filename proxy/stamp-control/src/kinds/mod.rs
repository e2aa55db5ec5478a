//! The kinds every layer above speaks: who acts ([`Actor`]), what they
//! changed ([`Change`]), what hooks are told ([`Event`]), and the share
//! links a change announces ([`Links`]). Nothing here does I/O.

mod actor;
mod change;
mod event;
mod links;

pub use actor::Actor;
pub(crate) use change::Unpublished;
pub use change::{Change, ChangeKind};
pub use event::{Event, EventKind};
pub use links::Links;
