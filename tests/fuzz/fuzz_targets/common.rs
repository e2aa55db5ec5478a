//! What several targets share: a ticket's override set.

use stamp_model::ticket::{Hash, ModuleRef, OverrideSet};

/// Overrides of a few modules, as a ticket has them.
pub fn overrides(paths: &[&str]) -> OverrideSet {
    let mut set = OverrideSet::new();
    for path in paths {
        set.insert(
            path.to_string(),
            ModuleRef {
                hash: Hash::of(path.as_bytes()),
                path: path.to_string(),
                size: 10,
            },
        );
    }
    set
}
