//! Who may act: configured API tokens, the principals they and sign-in
//! sessions stand for, and the identity providers' configuration. Pure
//! types and checks; the sessions and sign-in flows are the HTTP layer's.

mod providers;
mod tokens;

pub use providers::{
    build_providers, provider_of, FileProvider, FileRoles, ProviderConfig, ProviderKind, Rule,
};
pub use stamp_model::roles::Role;
pub use tokens::{authenticate, hash_token, Principal, Token, Via};
