//! `GET tickets/{KEY}/setup`: whether the ticket's modules can apply to the
//! app as production serves it. The first try with a module on a CDN is to
//! upload it like any file (on the app's origin); its `?dev=` page then
//! loads it from the proxy and its relative imports 404. This reads the
//! import maps of production's page (inline, and external ones on the app's
//! origin or an allowed one) and names what to set for every module
//! production loads from another origin.

use super::*;

/// A map the page carries.
struct PageMap {
    ty: String,
    /// Inline text, or where to fetch it.
    text: Option<String>,
    src: Option<String>,
}

impl Api {
    pub(super) async fn setup(&self, principal: &Principal, key: &TicketKey) -> ApiResult {
        require(principal, Action::Read)?;
        let t = self.ticket(key).await?;
        let set = workflow::overrides(&self.store, &t, Stage::Dev)
            .await?
            .unwrap_or_default();
        let page = url::Url::parse(&format!("{}/", self.cfg.link_base()))
            .map_err(|e| WebError::new(500, ErrorCode::Internal, e.to_string()))?;
        let mut warnings = Vec::new();
        let html = match self.read_origin("/").await {
            Ok(html) => html,
            Err(e) => {
                warnings.push(format!(
                    "production's page / could not be read to check the setup: {e}"
                ));
                return Ok((200, json!({ "page": "/", "warnings": warnings })));
            }
        };
        let mut maps: Vec<(url::Url, Value)> = Vec::new();
        for m in page_maps(&html) {
            match (m.text, m.src) {
                (Some(text), _) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&text) {
                        maps.push((page.clone(), v));
                    }
                }
                (None, Some(src)) => {
                    let Ok(url) = page.join(&src) else { continue };
                    let origin = url.origin().ascii_serialization();
                    let same = url.origin() == page.origin();
                    if !same && !self.cfg.api.asset_origins.contains(&origin) {
                        warnings.push(format!(
                            "production's page loads its {} map from {url}, on {origin}, which is \
                             not in the proxy's asset_origins: tickets cannot be merged into it; add \
                             \"{origin}\" to asset_origins",
                            m.ty
                        ));
                        continue;
                    }
                    let text = if same {
                        self.read_origin(&url[url::Position::BeforePath..]).await
                    } else {
                        self.fetch_text(url.as_str()).await
                    };
                    if let Ok(v) =
                        text.and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
                    {
                        maps.push((url, v));
                    }
                }
                (None, None) => {}
            }
        }
        let addresses: Vec<_> = maps
            .iter()
            .map(|(base, map)| stamp_model::assets::MapAddresses::read(map, base))
            .collect();
        for (spec, m) in set.iter() {
            let Some(url) = addresses
                .iter()
                .find_map(|a| a.served_elsewhere(&m.path, spec))
            else {
                continue;
            };
            let target = url::Url::parse(&url).ok();
            let origin = target
                .as_ref()
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default();
            let dir = target
                .as_ref()
                .map(|u| u.path().rsplit_once('/').map_or("", |(d, _)| d).to_string())
                .unwrap_or_default();
            let listed = self.cfg.api.asset_origins.contains(&origin);
            warnings.push(format!(
                "{} was uploaded on the app's origin, but production loads it from {url}: a ?dev= \
                 page would load it from the proxy, where its relative imports do not resolve. \
                 Upload it where production has it: set url_path = \"{origin}{dir}\" in stamp.toml{}",
                if spec == &m.path { m.path.clone() } else { format!("{spec} ({})", m.path) },
                if listed {
                    String::new()
                } else {
                    format!(", and add \"{origin}\" to asset_origins in the proxy's configuration")
                }
            ));
        }
        Ok((200, json!({ "page": "/", "warnings": warnings })))
    }

    /// A path from the origin, as the settler reads it (no selection, no overlay).
    async fn read_origin(&self, path: &str) -> Result<String, String> {
        let mut req = self.http.get(format!("{}{path}", self.origin.url));
        if let Some(host) = &self.origin.host {
            req = req.header(header::HOST, host);
        }
        read_text(req).await
    }

    async fn fetch_text(&self, url: &str) -> Result<String, String> {
        read_text(self.http.get(url)).await
    }
}

async fn read_text(req: reqwest::RequestBuilder) -> Result<String, String> {
    let resp = req.send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("answered {}", resp.status()));
    }
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    if body.len() > 4 * 1024 * 1024 {
        return Err("larger than 4 MiB".into());
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The import maps of a page, read by lol_html, the tokenizer the data
/// path rewrites pages with (unquoted attributes, case and comments are
/// its business, not a scanner's).
fn page_maps(html: &str) -> Vec<PageMap> {
    use std::cell::RefCell;
    use std::rc::Rc;
    const TYPES: [&str; 4] = [
        "importmap",
        "importmap-shim",
        "systemjs-importmap",
        "injector-importmap",
    ];
    let out: Rc<RefCell<Vec<PageMap>>> = Rc::default();
    let (on_el, on_text) = (out.clone(), out.clone());
    let settings = lol_html::Settings::new().with_strict(false);
    let settings = settings
        .append_element_content_handler(lol_html::element!("script[type]", move |el| {
            let ty = el.get_attribute("type").unwrap_or_default();
            if TYPES.iter().any(|t| ty.trim().eq_ignore_ascii_case(t)) {
                let src = el.get_attribute("src");
                let text = src.is_none().then(String::new);
                on_el.borrow_mut().push(PageMap { ty, text, src });
            } else {
                // A marker so this element's text is not taken for a map.
                on_el.borrow_mut().push(PageMap {
                    ty: String::new(),
                    text: None,
                    src: None,
                });
            }
            Ok(())
        }))
        .append_element_content_handler(lol_html::text!("script[type]", move |t| {
            if let Some(PageMap {
                text: Some(text), ..
            }) = on_text.borrow_mut().last_mut()
            {
                text.push_str(t.as_str());
            }
            Ok(())
        }));
    // The output is not wanted; an error only ends the reading early.
    let _ = lol_html::rewrite_str(html, settings);
    let maps = std::mem::take(&mut *out.borrow_mut());
    maps.into_iter().filter(|m| !m.ty.is_empty()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_found_inline_and_external() {
        let html = "<head><script src=/app.js></script><SCRIPT TYPE='systemjs-importmap'>{\"imports\":{}}</SCRIPT>\
                    <script type=\"importmap-shim\" src=\"https://cdn.test/m.json\"></script><script type=module>x</script>";
        let maps = page_maps(html);
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[0].ty, "systemjs-importmap");
        assert_eq!(maps[0].text.as_deref(), Some("{\"imports\":{}}"));
        assert_eq!(maps[1].src.as_deref(), Some("https://cdn.test/m.json"));
        let unquoted = page_maps("<script type=importmap src=/maps/app.json></script><!-- <script type=importmap>{}</script> -->");
        assert_eq!(unquoted.len(), 1);
        assert_eq!(unquoted[0].src.as_deref(), Some("/maps/app.json"));
    }
}
