//! Streaming decoders for compressed HTML the proxy must rewrite.
//!
//! The proxy asks the origin for a page it may rewrite in the codings the
//! client accepts and the proxy reads ([`accept_encoding`]), so the page
//! comes as production's would. gzip, deflate (zlib or raw), br and zstd are
//! decoded chunk by chunk, so memory stays flat whatever the page size.

use std::io::Write;

/// A content coding the proxy can undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    /// Parses a `Content-Encoding` value; `None` for identity/absent, `Err` for
    /// anything the proxy cannot decode (several codings, unknown ones).
    pub fn from_header(value: Option<&[u8]>) -> Result<Option<Coding>, String> {
        let Some(raw) = value else { return Ok(None) };
        let text = String::from_utf8_lossy(raw).trim().to_ascii_lowercase();
        match text.as_str() {
            "" | "identity" => Ok(None),
            "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
            "deflate" => Ok(Some(Coding::Deflate)),
            "br" => Ok(Some(Coding::Brotli)),
            "zstd" => Ok(Some(Coding::Zstd)),
            _ => Err(format!("content-encoding `{text}` cannot be decoded")),
        }
    }
}

/// The `Accept-Encoding` to ask the origin for a page the proxy may
/// rewrite: the client's, keeping only the codings the proxy decodes (and
/// `identity`), each with its weight. So the origin chooses as it would for
/// production, and never picks a coding the proxy cannot read (`*`, a
/// dictionary coding such as `dcb`, `compress`). Nothing left: `identity`.
pub fn accept_encoding(client: Option<&[u8]>) -> String {
    let Some(raw) = client else {
        return "identity".to_string();
    };
    let text = String::from_utf8_lossy(raw);
    let mut out: Vec<String> = Vec::new();
    // `*;q=0` refuses every coding not listed, identity among them: it
    // stays refused when the wildcard is dropped.
    let mut refuse_unlisted = false;
    for item in text.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        // One weight at most; an item with any other parameter is not
        // understood: left out.
        let params: Vec<&str> = parts.collect();
        let weight = match params[..] {
            [] => None,
            [q] => match weight(q) {
                Some(q) => Some(q),
                None => continue,
            },
            _ => continue,
        };
        if name == "*" {
            refuse_unlisted |= weight.is_some_and(|q| q.bytes().all(|b| b == b'0' || b == b'.'));
            continue;
        }
        let known = matches!(
            name.as_str(),
            "gzip" | "x-gzip" | "deflate" | "br" | "zstd" | "identity"
        );
        if !known || out.len() >= 8 {
            continue;
        }
        out.push(match weight {
            Some(q) => format!("{name};q={q}"),
            None => name,
        });
    }
    if refuse_unlisted && !out.iter().any(|c| c.starts_with("identity")) {
        out.push("identity;q=0".to_string());
    }
    if out.iter().all(|c| c.ends_with(";q=0")) && !refuse_unlisted {
        // Only refusals: identity is still acceptable, and all the origin may send.
        return "identity".to_string();
    }
    out.join(", ")
}

/// The weight a `q=` parameter gives, as RFC 9110 writes it (0 to 1, three
/// decimals at most).
fn weight(param: &str) -> Option<&str> {
    let param = param.trim();
    param
        .strip_prefix("q=")
        .or_else(|| param.strip_prefix("Q="))
        .filter(|q| is_weight(q))
}

/// `0`, `1`, `0.` or `1.` with up to three digits (`1.000` at most).
fn is_weight(q: &str) -> bool {
    let (int, frac) = q.split_once('.').unwrap_or((q, ""));
    frac.len() <= 3
        && frac.bytes().all(|b| b.is_ascii_digit())
        && match int {
            "0" => true,
            "1" => frac.bytes().all(|b| b == b'0'),
            _ => false,
        }
}

enum Inner {
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>),
    /// `deflate` is zlib-wrapped by the spec and raw by some servers: decided
    /// from the first byte.
    DeflatePending(Vec<u8>),
    Zlib(flate2::write::ZlibDecoder<Vec<u8>>),
    RawDeflate(flate2::write::DeflateDecoder<Vec<u8>>),
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Decoder<'static, Vec<u8>>),
    Done,
}

/// Decodes one response body.
pub struct Decoder {
    inner: Inner,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoder")
    }
}

impl Decoder {
    pub fn new(coding: Coding) -> Result<Decoder, String> {
        let inner = match coding {
            Coding::Gzip => Inner::Gzip(flate2::write::MultiGzDecoder::new(Vec::new())),
            Coding::Deflate => Inner::DeflatePending(Vec::new()),
            Coding::Brotli => {
                Inner::Brotli(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096)))
            }
            Coding::Zstd => Inner::Zstd(
                zstd::stream::write::Decoder::new(Vec::new()).map_err(|e| e.to_string())?,
            ),
        };
        Ok(Decoder { inner })
    }

    /// Decodes a chunk; returns the plain bytes available so far.
    pub fn write(&mut self, data: &[u8]) -> Result<Vec<u8>, String> {
        if let Inner::DeflatePending(held) = &mut self.inner {
            held.extend_from_slice(data);
            let Some(&first) = held.first() else {
                return Ok(Vec::new());
            };
            let held = std::mem::take(held);
            // A zlib stream starts with CM=8 in the low nibble and a header
            // checksum divisible by 31.
            let zlib = first & 0x0f == 8
                && held.len() >= 2
                && (u16::from(held[0]) << 8 | u16::from(held[1])) % 31 == 0;
            if held.len() < 2 && first & 0x0f == 8 {
                self.inner = Inner::DeflatePending(held);
                return Ok(Vec::new());
            }
            self.inner = if zlib {
                Inner::Zlib(flate2::write::ZlibDecoder::new(Vec::new()))
            } else {
                Inner::RawDeflate(flate2::write::DeflateDecoder::new(Vec::new()))
            };
            return self.write(&held);
        }
        let e = |e: std::io::Error| format!("cannot decode the page: {e}");
        match &mut self.inner {
            Inner::Gzip(d) => {
                d.write_all(data).map_err(e)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Inner::Zlib(d) => {
                d.write_all(data).map_err(e)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Inner::RawDeflate(d) => {
                d.write_all(data).map_err(e)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Inner::Brotli(d) => {
                d.write_all(data).map_err(e)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Inner::Zstd(d) => {
                d.write_all(data).map_err(e)?;
                d.flush().map_err(e)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Inner::DeflatePending(_) | Inner::Done => Ok(Vec::new()),
        }
    }

    /// Ends the stream; returns the last plain bytes.
    pub fn finish(&mut self) -> Result<Vec<u8>, String> {
        let e = |e: std::io::Error| format!("cannot decode the end of the page: {e}");
        let inner = std::mem::replace(&mut self.inner, Inner::Done);
        match inner {
            Inner::Gzip(d) => d.finish().map_err(e),
            Inner::Zlib(d) => d.finish().map_err(e),
            Inner::RawDeflate(d) => d.finish().map_err(e),
            Inner::Brotli(d) => d
                .into_inner()
                .map_err(|_| "cannot decode the end of the page: truncated brotli stream".into()),
            Inner::Zstd(mut d) => {
                d.flush().map_err(e)?;
                Ok(d.into_inner())
            }
            Inner::DeflatePending(held) if held.is_empty() => Ok(Vec::new()),
            Inner::DeflatePending(held) => {
                let mut d = Decoder {
                    inner: Inner::RawDeflate(flate2::write::DeflateDecoder::new(Vec::new())),
                };
                let mut out = d.write(&held)?;
                out.extend(d.finish()?);
                Ok(out)
            }
            Inner::Done => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn page() -> Vec<u8> {
        let mut p = b"<html><head><script type=importmap>{}</script></head>".to_vec();
        for i in 0..2000 {
            p.extend_from_slice(format!("<p>line {i}</p>").as_bytes());
        }
        p
    }

    fn roundtrip(coding: Coding, encoded: Vec<u8>) {
        let mut d = Decoder::new(coding).unwrap();
        let mut out = Vec::new();
        for piece in encoded.chunks(333) {
            out.extend(d.write(piece).unwrap());
        }
        out.extend(d.finish().unwrap());
        assert_eq!(out, page(), "{coding:?}");
    }

    #[test]
    fn the_origin_is_asked_only_for_codings_the_proxy_reads() {
        for (client, asked) in [
            (None, "identity"),
            (Some("gzip, deflate, br, zstd"), "gzip, deflate, br, zstd"),
            // Chrome with a shared dictionary; a wildcard; an old coding.
            (
                Some("gzip, deflate, br, zstd, dcb, dcz"),
                "gzip, deflate, br, zstd",
            ),
            (Some("*"), "identity"),
            (Some("compress, *;q=0.1"), "identity"),
            // A wildcard that refuses what is not listed keeps identity refused.
            (Some("gzip, *;q=0"), "gzip, identity;q=0"),
            (Some("gzip, identity, *;q=0.000"), "gzip, identity"),
            (Some("*;q=0"), "identity;q=0"),
            (Some("GZip;Q=0.5, identity;q=0"), "gzip;q=0.5, identity;q=0"),
            (
                Some("x-gzip ;q=1.000 , br;q=0.25"),
                "x-gzip;q=1.000, br;q=0.25",
            ),
            (Some(""), "identity"),
            (Some(" , ,"), "identity"),
            // Weights that are not weights, and parameters nobody knows.
            (Some("gzip;q=2, br;q=0.1234, zstd;q=-1"), "identity"),
            (
                Some("gzip;q=0.5;q=0.1, br;level=9, zstd;q=0.9"),
                "zstd;q=0.9",
            ),
            (Some("gzip;q=1.5"), "identity"),
            (Some("gzip\r\nx-injected: 1"), "identity"),
        ] {
            assert_eq!(
                accept_encoding(client.map(str::as_bytes)),
                asked,
                "{client:?}"
            );
        }
        // Bytes that are not text, and a header of many items: bounded.
        assert_eq!(accept_encoding(Some(b"\xff\xfe, gzip")), "gzip");
        let many = "gzip, ".repeat(10_000);
        assert_eq!(
            accept_encoding(Some(many.as_bytes()))
                .matches("gzip")
                .count(),
            8
        );
        // What is asked is always a valid header value.
        for raw in [&b"br;q=0.1, \x00gzip"[..], b"identity;q=0.", b"zstd;q=1."] {
            let asked = accept_encoding(Some(raw));
            assert!(http::HeaderValue::from_str(&asked).is_ok(), "{asked:?}");
        }
    }

    #[test]
    fn every_coding_decodes_in_pieces() {
        let p = page();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&p).unwrap();
        roundtrip(Coding::Gzip, gz.finish().unwrap());

        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&p).unwrap();
        roundtrip(Coding::Deflate, z.finish().unwrap());

        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&p).unwrap();
        roundtrip(Coding::Deflate, raw.finish().unwrap());

        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(&p).unwrap();
        }
        roundtrip(Coding::Brotli, br);

        roundtrip(Coding::Zstd, zstd::encode_all(&p[..], 3).unwrap());
    }

    #[test]
    fn header_values() {
        assert_eq!(Coding::from_header(None), Ok(None));
        assert_eq!(Coding::from_header(Some(b"identity")), Ok(None));
        assert_eq!(Coding::from_header(Some(b" GZIP ")), Ok(Some(Coding::Gzip)));
        assert!(Coding::from_header(Some(b"gzip, br")).is_err());
        assert!(Coding::from_header(Some(b"compress")).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut d = Decoder::new(Coding::Gzip).unwrap();
        assert!(d.write(b"definitely not gzip at all").is_err() || d.finish().is_err());
    }
}
