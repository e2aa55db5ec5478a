//! Share links, built from the configured public URL (or the listener's own
//! address) and never from a request's `Host` header: a link posted to Slack
//! or Jira must point at this app, whatever a client claimed to be.

use stamp_model::share::Signer;
use stamp_model::ticket::{TicketKey, View};

/// Mints share links.
#[derive(Debug, Clone)]
pub struct Links {
    /// `https://app.example.com` (no trailing slash).
    base: String,
    /// Signs links when previews are protected.
    signer: Option<Signer>,
}

impl Links {
    pub fn new(base: &str, signer: Option<Signer>) -> Links {
        Links {
            base: base.trim_end_matches('/').to_string(),
            signer,
        }
    }

    /// `BASE/?dev=KEY` (plus `&st=TOKEN` when previews are protected).
    pub fn share(&self, key: &TicketKey, view: View, generation: u64) -> String {
        let mut l = format!("{}/?{}={key}", self.base, view.as_str());
        if let Some(signer) = &self.signer {
            l.push_str("&st=");
            l.push_str(&signer.mint(key, view, generation));
        }
        l
    }
}
