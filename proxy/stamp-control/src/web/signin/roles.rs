//! Who a verified identity is, and their role by the provider's rules.

use super::*;

/// Who the verified claims are, and their role by the provider's rules.
pub fn map_principal(cfg: &ProviderConfig, claims: &Claims) -> Result<Principal, WebError> {
    let email = claims
        .email()
        .map(|e| e.as_str().to_ascii_lowercase())
        // Only an address the provider says it verified: some providers
        // leave the claim out, or let people type any address.
        .filter(|_| claims.email_verified() == Some(true));
    let groups: Vec<String> = match claims.additional_claims().claims.get(&cfg.groups_claim) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|g| g.as_str().map(String::from))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    principal_for(cfg, claims.subject().as_str(), email, &groups)
}

/// The principal for a verified identity, with its role by the rules.
pub fn principal_for(
    cfg: &ProviderConfig,
    subject: &str,
    email: Option<String>,
    groups: &[String],
) -> Result<Principal, WebError> {
    let role = role_for(cfg, subject, email.as_deref(), groups);
    let name = match &email {
        Some(e) => e.clone(),
        None => format!("{subject}@{}", cfg.name),
    };
    let name: String = name.chars().filter(|c| !c.is_control()).take(100).collect();
    match role {
        Some(role) => Ok(Principal {
            name,
            role,
            via: Via::SignIn(cfg.session_key()),
        }),
        None => Err(WebError::sign_in(
            403,
            format!(
                "{name} signed in with {}, but no role on this proxy matches them \
                 (ask an admin to add a group, domain or email rule)",
                cfg.label
            ),
        )),
    }
}

/// The first role (admin, qa, dev) one of whose rules matches.
pub fn role_for(
    cfg: &ProviderConfig,
    subject: &str,
    email: Option<&str>,
    groups: &[String],
) -> Option<Role> {
    cfg.roles.iter().find_map(|(role, rules)| {
        rules
            .iter()
            .any(|r| match r {
                Rule::Group(g) => groups.iter().any(|x| x == g),
                Rule::Email(e) => email == Some(e.as_str()),
                Rule::Domain(d) => email
                    .and_then(|e| e.rsplit_once('@'))
                    .is_some_and(|(_, dom)| dom == d),
                Rule::Subject(s) => subject == s,
            })
            .then_some(*role)
    })
}
