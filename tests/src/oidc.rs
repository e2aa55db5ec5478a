//! A real OpenID Provider (node-oidc-provider, from `tests/node`) on a free
//! loopback port, stopped on drop (and when its stdin closes, so it never
//! outlives a crashed test).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

pub struct OidcProvider {
    /// `http://127.0.0.1:PORT`, the issuer.
    pub issuer: String,
    child: Option<Child>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl OidcProvider {
    /// Starts the provider with `opts` (see `tests/node/oidc-provider.mjs`:
    /// `redirect_uris`, `post_logout_redirect_uris`, `accounts`).
    pub fn start(opts: &Value) -> anyhow::Result<OidcProvider> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
        if !dir
            .join("node_modules/oidc-provider/package.json")
            .is_file()
        {
            bail!(
                "{} has no oidc-provider: run tests/install-deps (it runs `npm ci` in tests/node)",
                dir.display()
            );
        }
        let mut child = Command::new("node")
            .arg(dir.join("oidc-provider.mjs"))
            .arg(opts.to_string())
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Its start-up warnings (development keys, in-memory store) are
            // expected here and would bury the test output.
            .stderr(Stdio::null())
            .spawn()
            .context("spawning node oidc-provider.mjs")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("ready ") {
                    let _ = tx.send(issuer.trim().to_string());
                }
            }
        });
        let issuer = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(i) => i,
            Err(_) => {
                let _ = child.kill();
                bail!("oidc-provider did not start within 30 s");
            }
        };
        Ok(OidcProvider {
            issuer,
            child: Some(child),
        })
    }

    /// Stops the provider now (to test an unreachable provider).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::stop_child(child, Duration::from_secs(2));
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}
