//! A rewritten body that came whole goes out with its `Content-Length`,
//! not chunked.
//!
//! A rewrite changes a body's length, so its response starts out chunked
//! (`page::variant_headers`): the header is due before the body is read.
//! But Pingora filters every task that has arrived before it writes any
//! (`process_upstream_tasks` takes the header and the bodies already
//! queued behind it in one batch, and runs the proxy's filters on all of
//! them first), and its downstream modules run on that batch only then,
//! at the write. So when the header and the body's end came together (a
//! page the origin sent at once: most pages), the body filter has already
//! produced every byte when this module's header filter runs, and the
//! length is known: the header says it, and the response is written as
//! the origin's would be, without chunk sizes or a separate last chunk.
//! When the end comes later (a page that streams), nothing is known at the
//! header and the response stays chunked, as before.
//!
//! Runs before the compression module (a higher order), which sees the
//! length and drops it when it compresses.

use std::any::Any;

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::modules::http::{HttpModule, HttpModuleBuilder, Module};
use pingora::prelude::*;
use pingora::proxy::Session;

/// Per response: the length of the whole rewritten body, once known
/// before the header is written.
#[derive(Debug, Default)]
pub struct WholeLength {
    /// Set by the body filter at the body's end.
    length: Option<usize>,
    /// The final header went out (or through): too late to say a length.
    header_done: bool,
}

#[async_trait]
impl HttpModule for WholeLength {
    async fn response_header_filter(
        &mut self,
        resp: &mut pingora::http::ResponseHeader,
        end_of_stream: bool,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        self.header_done = true;
        // A response without a body (a 304, a HEAD's) says nothing more.
        let bodiless = end_of_stream || matches!(resp.status.as_u16(), 204 | 304);
        if let Some(n) = self.length.take().filter(|_| !bodiless) {
            resp.remove_header(&header::TRANSFER_ENCODING);
            resp.insert_header(header::CONTENT_LENGTH, n.to_string())?;
        }
        Ok(())
    }

    fn response_body_filter(
        &mut self,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
    ) -> Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Adds [`WholeLength`] to every response.
pub struct WholeLengthBuilder;

impl HttpModuleBuilder for WholeLengthBuilder {
    /// Above the compression module's order (it runs later).
    fn order(&self) -> i16 {
        0
    }

    fn init(&self) -> Module {
        Box::<WholeLength>::default()
    }
}

/// The rewritten body has ended, `n` bytes in all: its header says so if
/// it has not been written yet.
pub fn body_ended(session: &mut Session, n: usize) {
    // A HEAD's answer says nothing of a body it has not.
    if session.req_header().method == http::Method::HEAD {
        return;
    }
    if let Some(m) = session.downstream_modules_ctx.get_mut::<WholeLength>() {
        if !m.header_done {
            m.length = Some(n);
        }
    }
}
