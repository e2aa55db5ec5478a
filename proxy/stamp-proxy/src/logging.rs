//! Log lines on standard error: text for people (env_logger's), or JSON
//! lines for a log pipeline (`log.format = "json"`, `--log-format json`).
//!
//! A JSON line is one object: `ts` (RFC 3339, UTC), `level`, `target`,
//! `msg`, then the line's own fields (`request_id` on everything the data
//! path logs about a request; the access log's `method`, `path`, `status`,
//! `bytes`, `ms`, `kind`, `ticket`, `error`). `RUST_LOG` filters as usual.

use std::io::Write;

use crate::config::LogFormat;

/// Installs the logger; call once, before anything logs.
pub fn init(format: LogFormat) {
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(log::LevelFilter::Info)
        // Its one warning, "Respond header is already sent", is every hit of
        // the stamped-page cache (see stamp_data::pagecache); RUST_LOG can
        // still ask for it.
        .filter_module(
            "pingora_core::protocols::http::v1::server",
            log::LevelFilter::Error,
        )
        .parse_env(env_logger::Env::default());
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let line = json_line(&buf.timestamp_millis().to_string(), record);
            writeln!(buf, "{line}")
        });
    }
    builder.init();
}

/// One record as a JSON object.
pub fn json_line(ts: &str, record: &log::Record<'_>) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("ts".into(), ts.into());
    obj.insert("level".into(), record.level().as_str().into());
    obj.insert("target".into(), record.target().into());
    obj.insert("msg".into(), record.args().to_string().into());
    let mut fields = Fields(&mut obj);
    let _ = record.key_values().visit(&mut fields);
    serde_json::Value::Object(obj).to_string()
}

struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let v = if let Some(n) = value.to_u64() {
            n.into()
        } else if let Some(n) = value.to_i64() {
            n.into()
        } else if let Some(f) = value.to_f64() {
            serde_json::Number::from_f64((f * 1000.0).round() / 1000.0)
                .map_or(serde_json::Value::Null, serde_json::Value::Number)
        } else if let Some(b) = value.to_bool() {
            b.into()
        } else {
            value.to_string().into()
        };
        // The line's own keys are not overwritten by a field of that name.
        self.0.entry(key.as_str().to_string()).or_insert(v);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_json_object_with_its_fields() {
        let kvs: &[(&str, log::kv::Value<'_>)] = &[
            ("request_id", log::kv::Value::from("abc")),
            ("status", log::kv::Value::from(200u16)),
            ("ms", log::kv::Value::from(1.23456f64)),
            ("msg", log::kv::Value::from("not mine")),
        ];
        let line = json_line(
            "2026-12-05T10:00:00.000Z",
            &log::Record::builder()
                .args(format_args!("GET / \"quoted\"\n200"))
                .level(log::Level::Info)
                .target("access")
                .key_values(&kvs)
                .build(),
        );
        assert!(!line.contains('\n'), "one line: {line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "access");
        assert_eq!(v["msg"], "GET / \"quoted\"\n200");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["status"], 200);
        assert_eq!(v["ms"], 1.235);
        assert_eq!(v["ts"], "2026-12-05T10:00:00.000Z");
    }
}
